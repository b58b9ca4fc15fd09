"""Loading weights safely: a file ``weights_only=True`` refuses is a DataError naming it, not a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from skewguard.errors import DataError
from skewguard.pipeline.artifacts import load_weights, save_weights


def test_a_corrupt_or_pickled_whole_model_weights_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02garbage, not a torch archive")
    whole_model = tmp_path / "legacy.pt"
    torch.save(nn.Linear(3, 1), whole_model)  # the full-module pickle older code wrote
    for path in (corrupt, whole_model):
        with pytest.raises(DataError, match=f"weights '{path}'.*state dict of tensors") as caught:
            load_weights(path)
        # torch's advice to retry with weights_only=False (i.e. run the file's code) is not passed on.
        assert "weights_only=False" not in str(caught.value)


def test_a_state_dict_written_by_save_weights_loads_back(tmp_path: Path) -> None:
    module = nn.Linear(3, 1)
    save_weights(module, tmp_path / "weights.pt")
    loaded = load_weights(tmp_path / "weights.pt")
    assert all(torch.equal(loaded[k], v) for k, v in module.state_dict().items())


def test_a_text_file_in_place_of_weights_is_a_data_error_naming_it(tmp_path: Path) -> None:
    # torch's unpickler reads 'h' as an opcode and raised a bare KeyError.
    text = tmp_path / "weights.pt"
    text.write_text("hello world")
    with pytest.raises(DataError, match=f"weights '{text}': cannot be loaded with weights_only=True"):
        load_weights(text)
