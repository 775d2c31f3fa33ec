#!/usr/bin/env bash
# The wheel works from any folder (issue 11 item 2): build it offline from a copy of this tree,
# install it into a fresh virtual environment that reuses this environment's packages (no Paddle
# download), and from a temporary folder outside the repo run the console scripts end to end on
# tiny synthetic data, with the shipped configs found inside the installed package and named as a
# wheel user names them (--config NAME.yml, --config fovea/NAME.yml: gamma_kit.resources.resolve_config).
# Safe where gamma_kit is also installed editable: the venv's copy comes first on sys.path, and
# the script checks that gamma_kit and its configs are imported from the venv.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/gamma_kit_wheel.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
trap 'echo "wheel check failed (line $LINENO): $BASH_COMMAND" >&2' ERR   # a bare test -s says nothing
start=$SECONDS

# 1. build from a copy of the tracked + untracked, not ignored files (no stale build/ output)
mkdir -p "$TMP/src" "$TMP/dist" "$TMP/run"
(cd "$REPO" && git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) \
    | tar -xf - -C "$TMP/src"
(cd "$TMP/src" && python -m pip wheel -q --no-deps --no-build-isolation -w "$TMP/dist" . ) > "$TMP/build.log" 2>&1 \
    || { cat "$TMP/build.log"; exit 1; }
WHEEL="$(ls "$TMP"/dist/gamma_kit-*.whl)"
# the listing goes to a file first: grep -q stops reading at its match, and under pipefail the lister's
# broken pipe failed the check whenever the match came before the end of the listing
python -m zipfile -l "$WHEEL" > "$TMP/wheel_files.txt"
grep -q "gamma_kit/_configs/seg/_base_/gamma_seg_dataset.yml" "$TMP/wheel_files.txt" \
    || { echo "wheel check: $WHEEL lacks gamma_kit/_configs"; exit 1; }

# 2. a fresh venv on top of this environment's packages; the wheel without dependencies
python -m venv --system-site-packages "$TMP/venv"
# --system-site-packages sees the base interpreter's packages; where this script runs inside a venv
# (a developer's), this environment's packages are added as plain path entries (their .pth files,
# such as an editable gamma_kit's, are not run, so the wheel's gamma_kit is the one imported)
OUTER="$(python -c 'import sys, sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"]) if p["platlib"] != p["purelib"] else None')"
INNER="$("$TMP/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
[ "$OUTER" = "$INNER" ] || printf '%s\n' "$OUTER" > "$INNER/_outer_environment.pth"
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

# 3. from the (empty) temporary folder: --help, the doctor and the config lists name the venv's copies;
#    the fovea demo (synthetic data, train, predict, score); fovea train with a config named as shipped;
#    seg prepare -> split -> train with a config named as shipped -> predict (BMPs + zip)
test -z "$(ls -A)" || { echo "wheel check: $TMP/run is not empty"; exit 1; }
gamma-kit-demo --help > /dev/null
gamma-kit-doctor > "$TMP/doctor.log" 2>&1 || { cat "$TMP/doctor.log"; echo "wheel check: gamma-kit-doctor failed"; exit 1; }
grep -q "^configs: *$TMP/venv/.*/gamma_kit/_configs " "$TMP/doctor.log" \
    || { cat "$TMP/doctor.log"; echo "wheel check: the doctor does not name the wheel's configs"; exit 1; }
for task in seg fovea; do      # the listing is written to a file: grep -q on a pipe would end the lister early
    name="$([ "$task" = seg ] && echo roi_liteunet_cpu.yml || echo unet_heatmap_cpu.yml)"
    "gamma-kit-$task" configs > "$TMP/configs_$task.txt"
    grep -q "^$name  *$TMP/venv/.*/gamma_kit/_configs/$task/$name " "$TMP/configs_$task.txt" \
        || { cat "$TMP/configs_$task.txt"; echo "wheel check: gamma-kit-$task configs does not list the wheel's $name"; exit 1; }
done
run() { "$@" >> "$TMP/run.log" 2>&1 || { tail -n 60 "$TMP/run.log"; echo "wheel check failed: $*"; exit 1; }; }
run gamma-kit-demo --out demo --tasks fovea --train 6 --test 2 --sizes 748x500,489x484 --fovea-epochs 1 \
    --device cpu --quiet
python -c 'import json, sys; r = json.load(open("demo/results.json")); sys.exit(r["fovea"]["n_test"] != 2)'
test -s demo/fovea/submission_fovea.csv
run gamma-kit-fovea train --fold 1 --config fovea/unet_heatmap_cpu.yml --data-root demo/data --run-dir fovea_run \
    --epochs 1 --batch-size 2 --device cpu --no-progress --set model.width=4 train.n_folds=3
# the fold's last checkpoint, found as predict finds it (gamma_kit.fovea.run_dir: a pointer to a set)
python -c 'import sys; from gamma_kit.fovea.run_dir import last_weights; w = last_weights("fovea_run/fold1"); sys.exit(w is None or not w.stat().st_size)'
test -s fovea_run/fold1/best.pdparams
run gamma-kit-seg prepare --data-root demo/data --out data/seg_prepared
run gamma-kit-seg split --dataset-dir data/seg_prepared --val-value 0.2
run gamma-kit-seg train --config liteunet_gamma_cpu.yml --save-dir seg_run --iters 2 --batch-size 2 --log-iters 1 \
    --no-eval --device cpu
grep -q "type: LiteUNet" seg_run/model.yml
run gamma-kit-seg predict --model seg_run --data-root demo/data --out seg_pred --device cpu
test "$(find seg_pred -name '*.bmp' | wc -l)" -eq 2 && test -n "$(find seg_pred -name '*.zip')"
echo "wheel check: $(basename "$WHEEL") in a fresh venv ran gamma-kit-doctor, gamma-kit-demo (fovea)," \
     "gamma-kit-fovea train --config fovea/unet_heatmap_cpu.yml and gamma-kit-seg train --config liteunet_gamma_cpu.yml" \
     "+ predict, the configs found by name in the wheel, from the empty folder $TMP/run ($((SECONDS - start)) s)"
