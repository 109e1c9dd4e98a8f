import pytest

from pipeline.selectors import (
    SegSelector,
    SelectorError,
    TomoSelector,
    parse_run_ids,
    parse_seg_info,
    parse_seg_uri,
    parse_tomo_uri,
    resolve_seg,
    resolve_tomo,
)


def test_tomo_uri_and_flags_agree_or_refuse():
    assert parse_tomo_uri("wbp@10.0") == TomoSelector("wbp", 10.0)
    assert parse_tomo_uri("denoised@7.84") == TomoSelector("denoised", 7.84)
    assert resolve_tomo() == TomoSelector(None, None)  # the run config's defaults apply
    assert resolve_tomo(voxel_size=7.84, tomo_alg="denoised") == TomoSelector("denoised", 7.84)
    assert resolve_tomo(tomo_uri="denoised@7.84") == TomoSelector("denoised", 7.84)
    assert resolve_tomo(voxel_size=10, tomo_uri="wbp@10") == TomoSelector("wbp", 10.0)
    with pytest.raises(SelectorError, match="disagrees"):
        resolve_tomo(voxel_size=7.84, tomo_uri="wbp@10")
    with pytest.raises(SelectorError, match="disagrees"):
        resolve_tomo(tomo_alg="denoised", tomo_uri="wbp@10")
    for bad in ("wbp", "wbp@", "@10", "wbp@ten", "wbp@-1", "a@1@2"):
        with pytest.raises(SelectorError):
            parse_tomo_uri(bad)


def test_seg_uri_forms_and_defaults():
    assert parse_seg_uri("predict:octopi/1") == SegSelector("predict", "octopi", "1")
    assert parse_seg_uri("predict") == SegSelector("predict", "octopi", "1")
    assert parse_seg_uri("predict:me") == SegSelector("predict", "me", "1")
    assert parse_seg_info("predict,octopi,1") == SegSelector("predict", "octopi", "1")
    assert parse_seg_info(" a , b , 2 ") == SegSelector("a", "b", "2")
    for bad in ("", "a,b", "a,b,c,d", "a,,c"):
        with pytest.raises(SelectorError):
            parse_seg_info(bad)
    # octopi 1.7's parse_target takes the legacy comma form too (exactly three parts)
    assert parse_seg_uri("predict,me,2") == SegSelector("predict", "me", "2")
    for bad in ("", ":u/1", "a:/1", "a:u/", "a@1", "a,b", "a,b,c,d", "a,,c"):
        with pytest.raises(SelectorError):
            parse_seg_uri(bad)


def test_seg_resolution_refuses_disagreement():
    assert resolve_seg() is None
    assert resolve_seg(seg_info="x,y,2") == SegSelector("x", "y", "2")
    assert resolve_seg(seg_uri="x:y/2") == SegSelector("x", "y", "2")
    assert resolve_seg(seg_info="x,y,2", seg_uri="x:y/2") == SegSelector("x", "y", "2")
    with pytest.raises(SelectorError, match="disagrees"):
        resolve_seg(seg_info="x,y,2", seg_uri="x:y/3")


def test_run_ids():
    assert parse_run_ids(None) is None
    assert parse_run_ids("") is None
    assert parse_run_ids("TS_1, TS_2,") == ["TS_1", "TS_2"]
    assert parse_run_ids(["a", 5]) == ["a", "5"]
    assert parse_run_ids("[TS_1,TS_2]") == ["TS_1", "TS_2"]  # octopi's spelling
    assert parse_run_ids("['TS_1', 'TS_2']") == ["TS_1", "TS_2"]
