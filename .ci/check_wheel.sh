#!/usr/bin/env bash
# The wheel works from any folder (issue 11 item 2): build it offline from a copy of this tree,
# install it into a fresh virtual environment that reuses this environment's packages (no Paddle
# download), and from a temporary folder outside the repo run the console scripts end to end on
# tiny synthetic data, with the shipped configs found inside the installed package.
# Safe where gamma_kit is also installed editable: the venv's copy comes first on sys.path, and
# the script checks that gamma_kit and its configs are imported from the venv.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/gamma_kit_wheel.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
start=$SECONDS

# 1. build from a copy of the tracked + untracked, not ignored files (no stale build/ output)
mkdir -p "$TMP/src" "$TMP/dist" "$TMP/run"
(cd "$REPO" && git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) \
    | tar -xf - -C "$TMP/src"
(cd "$TMP/src" && python -m pip wheel -q --no-deps --no-build-isolation -w "$TMP/dist" . ) > "$TMP/build.log" 2>&1 \
    || { cat "$TMP/build.log"; exit 1; }
WHEEL="$(ls "$TMP"/dist/gamma_kit-*.whl)"
python -m zipfile -l "$WHEEL" | grep -q "gamma_kit/_configs/seg/_base_/gamma_seg_dataset.yml" \
    || { echo "wheel check: $WHEEL lacks gamma_kit/_configs"; exit 1; }

# 2. a fresh venv on top of this environment's packages; the wheel without dependencies
python -m venv --system-site-packages "$TMP/venv"
"$TMP/venv/bin/python" -m pip install -q --no-deps --force-reinstall "$WHEEL" > "$TMP/install.log" 2>&1 \
    || { cat "$TMP/install.log"; exit 1; }
export PATH="$TMP/venv/bin:$PATH"
cd "$TMP/run"
python - "$TMP/venv" <<'PY'
import sys
from pathlib import Path
import gamma_kit
from gamma_kit.resources import config_path, configs_dir
venv = Path(sys.argv[1]).resolve()
for what, p in (("gamma_kit", Path(gamma_kit.__file__)), ("configs", configs_dir()),
                ("seg config", config_path("seg/liteunet_gamma_cpu.yml")),
                ("fovea config", config_path("fovea/unet_heatmap_cpu.yml"))):
    if venv not in p.resolve().parents:
        sys.exit(f"wheel check: {what} comes from {p}, not from the installed wheel in {venv}")
PY

# 3. from the temporary folder: --help; the fovea demo (synthetic data, train, predict, score);
#    seg prepare -> split -> train with the packaged CPU config -> predict (BMPs + zip)
gamma-kit-demo --help > /dev/null
run() { "$@" >> "$TMP/run.log" 2>&1 || { tail -n 60 "$TMP/run.log"; echo "wheel check failed: $*"; exit 1; }; }
run gamma-kit-demo --out demo --tasks fovea --train 6 --test 2 --sizes 748x500,489x484 --fovea-epochs 1 \
    --device cpu --quiet
python -c 'import json, sys; r = json.load(open("demo/results.json")); sys.exit(r["fovea"]["n_test"] != 2)'
test -s demo/fovea/submission_fovea.csv
SEG_CFG="$(python -c 'from gamma_kit.resources import config_path; print(config_path("seg/liteunet_gamma_cpu.yml"))')"
run gamma-kit-seg prepare --data-root demo/data --out data/seg_prepared
run gamma-kit-seg split --dataset-dir data/seg_prepared --val-value 0.2
run gamma-kit-seg train --config "$SEG_CFG" --save-dir seg_run --iters 2 --batch-size 2 --log-iters 1 --no-eval \
    --device cpu
run gamma-kit-seg predict --model seg_run --data-root demo/data --out seg_pred --device cpu
test "$(find seg_pred -name '*.bmp' | wc -l)" -eq 2 && test -n "$(find seg_pred -name '*.zip')"
echo "wheel check: $(basename "$WHEEL") in a fresh venv ran gamma-kit-demo (fovea) and gamma-kit-seg train/predict" \
     "with its packaged configs from $TMP/run ($((SECONDS - start)) s)"
