"""Cars3D: the MATLAB reader, the archive reader and refusals, the loader on a converted file, and (slow)
183 MATLAB files of the published schema converted once into the factor grid in list.txt's order."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from datasets.cars3d import FACTOR_SIZES, SPEC, Cars3DOptions, load_cars3d, read_mesh
from datasets.factor_grid import write_grid_file
from datasets.registry import DataError

NAMES = [f"car_{i:03d}_mesh" for i in range(1, 184)]


def mesh(object_value: int) -> np.ndarray:
    """uint8 ``(128, 128, 3, 24, 4)`` whose quadrants spell the factors (survive resizing): top-left
    ``object_value``, top-right azimuth + 1, bottom-left elevation + 1, bottom-right 200."""
    quadrants = np.empty((2, 2, 24, 4), dtype=np.uint8)  # (row half, column half, azimuth, elevation)
    quadrants[0, 0] = object_value
    quadrants[0, 1] = np.arange(1, 25)[:, None]
    quadrants[1, 0] = np.arange(1, 5)[None, :]
    quadrants[1, 1] = 200
    spread = np.broadcast_to(quadrants[:, None, :, None, None], (2, 64, 2, 64, 3, 24, 4))
    return spread.reshape(128, 128, 3, 24, 4)


def mat_bytes(array: np.ndarray, key: str = "im") -> bytes:
    buffer = io.BytesIO()
    savemat(buffer, {key: array})
    return buffer.getvalue()


def write_cars(folder: Path, names: list[str]) -> Path:
    """``data/cars`` of the published archive: a mesh per name (car k's top-left quadrant holding k),
    listed in list.txt in reverse order (the last name is object 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.mat").write_bytes(mat_bytes(mesh(int(name[4:7]))))
    (folder / "list.txt").write_text("\n".join(reversed(names)) + "\n")
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A converted file (the layout the loader streams) whose rows spell their factors."""
    factors = SPEC.factors_of(np.arange(SPEC.num_rows))
    values = np.stack([factors[:, 2] + 1, factors[:, 1] + 1, factors[:, 0] + 1, np.full(len(factors), 200)], 1)

    def fill(data):
        quadrants = values.reshape(-1, 2, 2).astype(np.uint8)
        data[:] = np.broadcast_to(quadrants[:, :, None, :, None, None], (len(values), 2, 32, 2, 32, 3)).reshape(
            len(values), 64, 64, 3)

    return write_grid_file(tmp_path_factory.mktemp("cars3d") / "cars3d64.h5", SPEC, fill, source="test")


def spelled(x: np.ndarray) -> np.ndarray:
    """The quadrant values of observations float32 ``(N, 3, 64, 64)``, as ints ``(N, 4)``."""
    pixels = np.round(x[:, 0] * 255).astype(int)
    return np.stack([pixels[:, 16, 16], pixels[:, 16, 48], pixels[:, 48, 16], pixels[:, 48, 48]], axis=1)


def test_read_mesh_resizes_every_view():
    views = read_mesh(mat_bytes(mesh(7)), "m")
    assert views.shape == (4, 24, 64, 64, 3) and views.dtype == np.uint8
    assert views[2, 5, 16, 16].tolist() == [7, 7, 7] and views[2, 5, 16, 48, 0] == 6 and views[2, 5, 48, 16, 0] == 3


def test_read_mesh_refusals():
    with pytest.raises(DataError, match=r"m: expected im \(128, 128, 3, 24, 4\) uint8 .* found im \(128, 128, 3, 24, 3\)"):
        read_mesh(mat_bytes(mesh(1)[..., :3]), "m")
    with pytest.raises(DataError, match="found no 'im'"):
        read_mesh(mat_bytes(np.zeros(3), key="other"), "m")
    with pytest.raises(DataError, match="m: not a readable MATLAB file"):
        read_mesh(b"not matlab at all" * 20, "m")


def test_the_ground_truth_reads_elevation_azimuth_object_rows(converted):
    prepared = load_cars3d(Cars3DOptions(name="cars3d", path=str(converted)), 0)
    description = prepared.describe()
    assert description.input_shape == (3, 64, 64)
    assert description.classes == {"elevation": 4, "azimuth": 24, "object": 183}
    assert description.num_train + description.num_val == 17_568
    data = pickle.loads(pickle.dumps(prepared.ground_truth))
    rng = np.random.default_rng(0)
    factors = data.sample_factors(1000, rng)
    assert factors.min() >= 0 and (factors.max(axis=0) < np.array(FACTOR_SIZES)).all()
    wanted = np.array([[0, 0, 0], [3, 23, 182], [2, 5, 10]])
    assert spelled(data.sample_observations_from_factors(wanted, rng)).tolist() == [
        [1, 1, 1, 200], [183, 24, 4, 200], [11, 6, 3, 200]]
    assert SPEC.rows_of(wanted).tolist() == [0, 17_567, 2 * 24 * 183 + 5 * 183 + 10]


@pytest.mark.slow  # 183 x 4.7 MB written, 17,568 images resized: ~10 s of one idle core
def test_the_published_files_are_converted_in_list_order(tmp_path, monkeypatch):
    folder = write_cars(tmp_path / "cars", NAMES)
    monkeypatch.setenv("VAE_STUDY_CACHE", str(tmp_path / "cache"))
    prepared = load_cars3d(Cars3DOptions(name="cars3d", path=str(folder)), 0)
    assert prepared.info["file_chosen_by"] == "dataset.path (converted)"
    wanted = np.array([[0, 0, 0], [3, 23, 182], [2, 5, 10]])
    values = spelled(prepared.ground_truth.sample_observations_from_factors(wanted, np.random.default_rng(0)))
    # object i is line i of list.txt, which lists car_183 first: its top-left quadrant holds 183 - i
    assert values.tolist() == [[183, 1, 1, 200], [1, 24, 4, 200], [173, 6, 3, 200]]
    again = load_cars3d(Cars3DOptions(name="cars3d", path=str(prepared.source)), 0)
    assert again.source == prepared.source and again.info["file_chosen_by"] == "dataset.path"


def test_without_list_txt_the_names_are_sorted(tmp_path, monkeypatch):
    folder = write_cars(tmp_path / "cars", NAMES[:2])
    (folder / "list.txt").unlink()
    monkeypatch.setenv("VAE_STUDY_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="expected 183 car .mat files, but found 2$"):
        load_cars3d(Cars3DOptions(name="cars3d", path=str(folder)), 0)
    (folder / "list.txt").write_text("car_001_mesh\ncar_999_mesh\n")
    with pytest.raises(DataError, match="named in list.txt, but found 2 \\(missing car_999_mesh.mat\\)"):
        load_cars3d(Cars3DOptions(name="cars3d", path=str(folder)), 0)


def test_the_archive_is_read_as_published(tmp_path):
    """The .tar.gz's data/cars/ members are read; other folders of the archive are skipped."""
    cars_folder = write_cars(tmp_path / "cars", NAMES[:2])
    archive = tmp_path / "nips2015-analogy-data.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for name in ("car_001_mesh.mat", "list.txt"):
            tar.add(cars_folder / name, arcname=f"data/cars/{name}")
        tar.add(cars_folder / "car_002_mesh.mat", arcname="data/sprites/car_002_mesh.mat")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAE_STUDY_CACHE", str(tmp_path / "cache"))
        with pytest.raises(DataError, match=f"{archive}: expected 183 car .mat files named in list.txt, but found 1 "):
            load_cars3d(Cars3DOptions(name="cars3d", path=str(archive)), 0)
        (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b broken")
        with pytest.raises(DataError, match="not a readable tar archive"):
            load_cars3d(Cars3DOptions(name="cars3d", path=str(tmp_path / "broken.tar.gz")), 0)
        with pytest.raises(DataError, match="md5 [0-9a-f]+ does not match the published 4e866a79"):
            load_cars3d(Cars3DOptions(name="cars3d", path=str(archive), checksum=True), 0)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(DataError, match="dataset.path: .*absent.h5: no such file or folder"):
        load_cars3d(Cars3DOptions(name="cars3d", path=str(tmp_path / "absent.h5")), 0)
