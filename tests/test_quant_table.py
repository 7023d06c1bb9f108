"""The one weight-type table (pyllm/quant.py) against the C core: the check that runs at import
passes on the real table and fails, naming the type, on a table that disagrees."""
import dataclasses

import pytest

from pyllm import quant
from pyllm._native import ffi, lib


def test_the_table_matches_the_c_core():
    quant._check_against_c()
    c_names = {name for name in ffi.typeof("enum pyllm_type").relements}
    assert c_names == {f"PYLLM_TYPE_{n.upper()}" for n in quant.TYPES}
    for t in quant.TYPES.values():
        assert lib.pyllm_row_bytes(t.ggml_id, 4 * t.block) == 4 * t.block_bytes


@pytest.mark.parametrize("change, message", [
    (lambda types: types.__setitem__("q4_0", dataclasses.replace(types["q4_0"], block_bytes=19)),
     "row size for q4_0"),
    (lambda types: types.__setitem__("q8_0", dataclasses.replace(types["q8_0"], ggml_id=9)),
     "disagrees with the C core"),
    (lambda types: types.pop("f16"), "disagrees with the C core"),
    (lambda types: types.__setitem__("q4_1", dataclasses.replace(types["q4_1"], block=16, block_bytes=10)),
     "row size for q4_1"),
])
def test_a_table_that_disagrees_is_refused(monkeypatch, change, message):
    types = dict(quant.TYPES)
    change(types)
    monkeypatch.setattr(quant, "TYPES", types)
    with pytest.raises(ImportError, match=message):
        quant._check_against_c()


def test_every_gguf_type_has_one_entry():
    assert len(quant.BY_ID) == len(quant.ALL_TYPES)
    assert all(t.decodable for t in quant.TYPES.values())
    assert quant.weight_type("q6_k").block == quant.QK_K and quant.weight_type("q6_k").runnable
    with pytest.raises(ValueError, match="unknown weight type 'q3_x'"):
        quant.row_bytes("q3_x", 256)
