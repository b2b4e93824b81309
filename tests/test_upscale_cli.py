"""`genart upscale` through the CLI on a tiny random upscaler: files, folders, modes and failures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from genart_cli.checkpoints.native import save_bundle
from genart_cli.models.esrgan import UpscalerConfig, build_upscaler

from conftest import redraw_parameters, run_cli, write_test_image


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    model = build_upscaler(UpscalerConfig(arch="srvgg", scale=4, num_feat=8, num_block=2))
    redraw_parameters(model)
    path = tmp_path_factory.mktemp("models") / "up.safetensors"
    save_bundle(path, upscaler=model.eval(), model_card="tiny test upscaler")
    return path


def size_and_mode(path):
    with Image.open(path) as image:
        return image.size, image.mode


def test_one_file_beside_its_input(tmp_path, upscaler):
    write_test_image(tmp_path / "photo.png", 7, 5)
    done = run_cli(tmp_path, "upscale", "photo.png", "--model", upscaler)
    assert done.returncode == 0, done.stderr
    assert size_and_mode(tmp_path / "photo_x4.png") == ((28, 20), "RGB")


def test_other_scale_resamples_and_says_so(tmp_path, upscaler):
    write_test_image(tmp_path / "photo.png", 10, 6)
    done = run_cli(tmp_path, "upscale", "photo.png", "--model", upscaler, "--scale", "2.5", "--out", "big.png")
    assert done.returncode == 0, done.stderr
    assert "Lanczos" in done.stderr
    assert size_and_mode(tmp_path / "big.png")[0] == (25, 15)


def test_modes_are_kept(tmp_path, upscaler):
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8), mode="L").save(tmp_path / "grey.png")
    rgba = np.zeros((6, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:, :4, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    Image.fromarray((np.arange(48, dtype=np.uint16) * 1000).reshape(6, 8)).save(tmp_path / "deep.png")
    done = run_cli(tmp_path, "upscale", "grey.png", "alpha.png", "deep.png", "--model", upscaler, "--out", "out/")
    assert done.returncode == 0, done.stderr
    assert size_and_mode(tmp_path / "out/grey_x4.png") == ((32, 24), "L")
    assert size_and_mode(tmp_path / "out/alpha_x4.png") == ((32, 24), "RGBA")
    assert size_and_mode(tmp_path / "out/deep_x4.png")[1].startswith("I")
    with Image.open(tmp_path / "out/alpha_x4.png") as image:
        alpha = np.asarray(image)[..., 3]
    assert alpha[:, 0].max() == 0
    assert alpha[:, -1].min() == 255


def test_folder_recursive_mirrors_and_skips_non_images(tmp_path, upscaler):
    (tmp_path / "in/sub").mkdir(parents=True)
    write_test_image(tmp_path / "in/a.png", 4, 4)
    write_test_image(tmp_path / "in/sub/b.jpg", 4, 4)
    (tmp_path / "in/notes.txt").write_text("not an image")
    done = run_cli(tmp_path, "upscale", "in", "--recursive", "--model", upscaler, "--out", "out")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out/a_x4.png").is_file()
    assert (tmp_path / "out/sub/b_x4.jpg").is_file()
    assert "notes.txt: not an image" in done.stderr
    assert "2 upscaled, 0 failed, 1 not images" in done.stderr
    # A damaged file with an image suffix is an input that fails, not a skipped non-image.
    (tmp_path / "in/sub/fake.png").write_text("plain text")
    done = run_cli(tmp_path, "upscale", "in", "--recursive", "--model", upscaler, "--out", "out2")
    assert done.returncode == 3
    assert "fake.png" in done.stderr
    assert "1 failed" in done.stderr


def test_bad_file_fails_run_others_finish(tmp_path, upscaler):
    write_test_image(tmp_path / "good.png", 4, 4)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    done = run_cli(tmp_path, "upscale", "bad.png", "good.png", "--model", upscaler, "--out", "out/")
    assert done.returncode == 3
    assert (tmp_path / "out/good_x4.png").is_file()
    assert not (tmp_path / "out/bad_x4.png").exists()
    assert "bad.png" in done.stderr
    assert "1 failed" in done.stderr
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_collisions_are_refused_before_any_work(tmp_path, upscaler):
    write_test_image(tmp_path / "x.png", 4, 4)
    Image.open(tmp_path / "x.png").save(tmp_path / "x.webp")
    done = run_cli(tmp_path, "upscale", "x.png", "x.webp", "--format", "png", "--model", upscaler, "--out", "o/")
    assert done.returncode == 3
    assert "would also be written" in done.stderr
    assert not (tmp_path / "o").exists()
    # The same file named twice is one input.
    done = run_cli(tmp_path, "upscale", "x.png", "./x.png", "--model", upscaler, "--out", "twice/")
    assert done.returncode == 0, done.stderr
    assert "1 upscaled" in done.stderr


def test_out_names_a_file_only_for_one_input(tmp_path, upscaler):
    write_test_image(tmp_path / "a.png", 4, 4)
    write_test_image(tmp_path / "b.png", 4, 4, seed=1)
    done = run_cli(tmp_path, "upscale", "a.png", "b.png", "--model", upscaler, "--out", "single.png")
    assert done.returncode == 2
    assert "output folder" in done.stderr
    assert not (tmp_path / "single.png").exists()
    done = run_cli(tmp_path, "upscale", "a.png", "--model", upscaler, "--out", "newdir")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "newdir/a_x4.png").is_file()
    done = run_cli(tmp_path, "upscale", "a.png", "--model", upscaler, "--format", "WEBP", "--out", "w/")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "w/a_x4.webp").is_file()


def test_existing_outputs_skip_overwrite_and_truncation(tmp_path, upscaler):
    write_test_image(tmp_path / "a.png", 4, 4)
    write_test_image(tmp_path / "b.png", 4, 4, seed=1)
    assert run_cli(tmp_path, "upscale", "a.png", "b.png", "--model", upscaler, "--out", "o/").returncode == 0
    done = run_cli(tmp_path, "upscale", "a.png", "--model", upscaler, "--out", "o/")
    assert done.returncode == 3
    assert "--overwrite" in done.stderr
    # A truncated output (an interrupted run of another tool) is redone; a complete one is skipped.
    data = (tmp_path / "o/b_x4.png").read_bytes()
    (tmp_path / "o/b_x4.png").write_bytes(data[: len(data) // 2])
    done = run_cli(tmp_path, "upscale", "a.png", "b.png", "--model", upscaler, "--out", "o/", "--skip-existing")
    assert done.returncode == 0, done.stderr
    assert "1 upscaled, 0 failed, 1 skipped (output exists)" in done.stderr
    assert (tmp_path / "o/b_x4.png").read_bytes() == data


def test_animated_and_jpeg_alpha_errors(tmp_path, upscaler):
    frames = [Image.new("RGB", (4, 4), color) for color in ("red", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    done = run_cli(tmp_path, "upscale", "anim.gif", "--model", upscaler)
    assert done.returncode == 3
    assert "anim.gif" in done.stderr
    assert "animated" in done.stderr
    Image.new("RGBA", (4, 4)).save(tmp_path / "t.png")
    done = run_cli(tmp_path, "upscale", "t.png", "--model", upscaler, "--format", "jpg")
    assert done.returncode == 3
    assert "--format png" in done.stderr
    assert not (tmp_path / "t_x4.jpg").exists()


def test_tiles_give_the_untiled_image(tmp_path, upscaler):
    write_test_image(tmp_path / "p.png", 40, 30)
    assert run_cli(tmp_path, "upscale", "p.png", "--model", upscaler, "--tile", "0", "--out", "whole.png").returncode == 0
    done = run_cli(tmp_path, "upscale", "p.png", "--model", upscaler, "--tile", "16", "--out", "tiled.png")
    assert done.returncode == 0, done.stderr
    whole = np.asarray(Image.open(tmp_path / "whole.png"))
    tiled = np.asarray(Image.open(tmp_path / "tiled.png"))
    assert np.array_equal(whole, tiled)


def test_diffusion_model_is_not_an_upscaler(tmp_path, tiny_model):
    write_test_image(tmp_path / "p.png", 4, 4)
    done = run_cli(tmp_path, "upscale", "p.png", "--model", tiny_model)
    assert done.returncode == 4
    assert "super-resolution" in done.stderr


def test_sample_upscale_uses_the_bundled_upscaler(tmp_path, upscaler, tiny_model, monkeypatch):
    monkeypatch.setenv("GENART_UPSCALER", str(upscaler))
    done = run_cli(tmp_path, "sample", "--model", tiny_model, "--steps", "2", "--upscale", "4", "--out", "big.png")
    assert done.returncode == 0, done.stderr
    assert size_and_mode(tmp_path / "big.png") == ((64, 64), "RGB")
    from genart_cli.imaging.io import read_png_settings

    assert read_png_settings(tmp_path / "big.png")["upscale"] == "4"
    done = run_cli(tmp_path, "sample", "--model", tiny_model, "--steps", "2", "--upscale", "3", "--out", "mid.png")
    assert done.returncode == 0, done.stderr
    assert size_and_mode(tmp_path / "mid.png")[0] == (48, 48)
    monkeypatch.setenv("GENART_UPSCALER", str(tiny_model))
    done = run_cli(tmp_path, "sample", "--model", tiny_model, "--steps", "2", "--upscale", "4", "--out", "x.png")
    assert done.returncode == 4
    assert "super-resolution" in done.stderr
