#!/usr/bin/env bash
# Mutation testing of the core modules (docs/mutation.md): each module is mutated with mutmut
# and tried against its own tests only, so the whole run fits in about an hour on 2 cores.
#
#   scripts/mutation.sh                          every module below, one after the other
#   scripts/mutation.sh analysis/statistics.py   one module (or several), by path under cnnreport/
#   scripts/mutation.sh --list                   the modules, their tests and scope
#
# Needs mutmut: pip install -c constraints-cpu.txt -e ".[test,mutation]". Not part of .ci/run.
# It works on a copy of the tree (tracked and untracked, not ignored, files: uncommitted tests
# count), never on the sources in place. Per module it writes
# test-output/mutation/<module>.survivors.txt (every mutant not killed: file:line, the change)
# and <module>.log; the table at the end is also test-output/mutation/scores.tsv.
#
# Environment: PYTHON (the interpreter with mutmut; default: python3 on PATH), MUTATION_JOBS
# (parallel mutants, default 2), MUTATION_OUT (results folder), MUTATION_KEEP=1 (keep the
# copies, e.g. to run `mutmut show NAME` in one), TMPDIR (where the copies go).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
JOBS=${MUTATION_JOBS:-2}
OUT=${MUTATION_OUT:-$ROOT/test-output/mutation}

# module (under cnnreport/) | its tests | mutant-name patterns ('' = every function in the file)
# A pattern names mutmut's generated function: x_NAME* for a function, xǁCLASSǁNAME* for a method.
MODULES=(
  "analysis/statistics.py|tests/test_alerts.py tests/test_architecture_facts.py tests/test_capture.py tests/test_nonfinite.py tests/test_weight_stats.py tests/test_histogram_bins.py tests/test_layer_capture_measures.py tests/test_filter_measures.py|"
  "capture/activations.py|tests/test_capture.py tests/test_nonfinite.py tests/test_scale.py tests/test_capture_reductions.py tests/test_capture_layer_records.py|"
  "analysis/alerts.py|tests/test_alerts.py tests/test_alerts_at_scale.py tests/test_nonfinite.py tests/test_activation_alert_thresholds.py tests/test_weight_alert_thresholds.py tests/test_nonfinite_alert_origins.py tests/test_preprocessing_alert_figures.py tests/test_fp16_alert_runs.py tests/test_training_mode_alert.py tests/test_alert_context_links.py|"
  "analysis/architecture.py|tests/test_architecture.py tests/test_architecture_facts.py|"
  "analysis/graph.py|tests/test_graph.py tests/test_architecture_facts.py tests/test_node_categories.py tests/test_receptive_field_values.py tests/test_graph_folding.py|"
  "io/probes.py|tests/test_probes.py tests/test_input_conversion.py tests/test_probe_options_values.py tests/test_probe_tensor_values.py tests/test_probe_image_values.py tests/test_probe_model_helpers.py|x_normalisation* x__mean_std* x__numbers* x__check_image_scale* x__check_size* x__to_float32* x__channels_first* x__batched* x__resize* x__interpolate* x__cover_size* x__box_reduce* x__to_float__* x__to_target_channels* x__preprocess_tensors* x__convert_channels* x__normalise* x__read_image* x__join* x_synthetic_probes* x_expected_input_channels* x_image_channels* x_expected_input_ndim* x__first_conv*"
  "io/loading.py|tests/test_loading.py tests/test_input_conversion.py tests/test_model_state.py tests/test_state_dict_fit_values.py tests/test_model_spec_values.py tests/test_loading_messages_values.py tests/test_loading_devices.py tests/test_loading_spec_forms.py tests/test_loading_checkpoint_shapes.py tests/test_loading_import_search.py tests/test_loading_strict_values.py tests/test_loading_warnings.py|"
  "io/provenance.py|tests/test_provenance.py tests/test_verify.py tests/test_fingerprint_values.py tests/test_verify_page_values.py|"
  "analysis/diff.py|tests/test_diff.py tests/test_nonfinite.py tests/test_diff_architecture_values.py tests/test_diff_weight_values.py tests/test_diff_activation_values.py tests/test_diff_prediction_alert_values.py|"
  "capture/attribution.py|tests/test_attribution.py|"
  "report/sections.py|tests/test_attribution.py|x__attribution*"
  "render/views.py|tests/test_markdown.py tests/test_end_to_end.py tests/test_view_escaping.py tests/test_template_cache.py|x_md_escape* x_md_code* x__md_finalize* x_make_markdown_environment* x_make_environment* x_tile_labels* x_fit_markdown*"
  "render/outputs.py|tests/test_outputs.py tests/test_output_set_writes.py tests/test_output_plan_checks.py|"
  "errors.py|tests/test_terminal_safety.py tests/test_cli_errors.py tests/test_cli_contract.py|"
  # Issue 19's --spectral alert (its float16 counts and first-BatchNorm input are in the whole
  # capture/activations.py entry above).
  "analysis/spectral.py|tests/test_spectral.py|x_spectral_alerts*"
)

field() { # field N "a|b|c" (no glob expansion of the patterns)
  local -a parts
  IFS='|' read -r -a parts <<<"$2"
  printf '%s' "${parts[$1]:-}"
}

if [ "${1:-}" = "--list" ]; then
  for entry in "${MODULES[@]}"; do
    printf '%s\n    tests: %s\n    scope: %s\n' "$(field 0 "$entry")" "$(field 1 "$entry")" "$(p=$(field 2 "$entry"); echo "${p:-whole file}")"
  done
  exit 0
fi

if ! "$PYTHON" -c "import mutmut" 2>/dev/null; then
  echo "mutation: $PYTHON has no mutmut; install it with: pip install -c constraints-cpu.txt -e '.[test,mutation]'" >&2
  exit 2
fi

selected=()
if [ "$#" -eq 0 ]; then
  selected=("${MODULES[@]}")
else
  for want in "$@"; do
    want=${want#cnnreport/}
    found=""
    for entry in "${MODULES[@]}"; do
      if [ "$(field 0 "$entry")" = "$want" ]; then found=$entry; fi
    done
    if [ -z "$found" ]; then
      echo "mutation: $want is not one of the modules (scripts/mutation.sh --list)" >&2
      exit 2
    fi
    selected+=("$found")
  done
fi

mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cnnreport-mutation.XXXXXX")
cleanup() { if [ "${MUTATION_KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "mutation: copies kept in $WORK"; fi; }
trap cleanup EXIT

# A test that runs cnnreport in a subprocess imports the mutated copy too (PYTHONPATH below);
# when mutmut collects which tests reach which function, that child's trampolines need
# mutmut's configuration, which it reads from the working directory: load it from the copy.
mkdir -p "$WORK/hook"
#
# Started in the background (nohup, a CI step), Python inherits SIGINT ignored and installs no
# KeyboardInterrupt handler; the tests of Ctrl-C during the writes need Python's usual one.
cat > "$WORK/hook/sitecustomize.py" <<'EOF'
import os
import signal

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_root = os.environ.get("CNNREPORT_MUTATION_ROOT")
if _root and os.environ.get("MUTANT_UNDER_TEST"):
    _cwd = os.getcwd()
    os.chdir(_root)
    try:
        from mutmut.configuration import config as _config

        _config()
    finally:
        os.chdir(_cwd)
EOF

# mutmut forks each mutant from a process that has already run the tests once: a value
# memoised then (the Jinja environments, lru_caches) was built by the unmutated code, and a
# mutant of the function building it would survive unseen. This plugin clears them first.
cat > "$WORK/hook/mutation_fresh_state.py" <<'PLUGIN'
import functools
import sys

# module globals that memoise a value on first use (reset to None)
_MEMO = {"cnnreport.render.views": ("_ENV", "_MD_ENV")}


def pytest_configure(config):
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "cnnreport" or name.startswith("cnnreport.")):
            continue
        for attr in _MEMO.get(name, ()):
            if hasattr(module, attr):
                setattr(module, attr, None)
        for value in list(vars(module).values()):
            if isinstance(value, functools._lru_cache_wrapper):
                value.cache_clear()
PLUGIN

toml_list() { # words -> "a", "b"
  local out="" w
  for w in "$@"; do out="$out${out:+, }\"$w\""; done
  printf '%s' "$out"
}

rows=()
for entry in "${selected[@]}"; do
  # "file.py#tag": a second, narrower entry for the same file, with results of its own name
  module=$(field 0 "$entry")
  tag=""
  case "$module" in *"#"*) tag=".${module#*#}"; module=${module%%#*} ;; esac
  read -r -a tests <<<"$(field 1 "$entry")"
  read -r -a patterns <<<"$(field 2 "$entry")"
  name=${module//\//.}
  name=${name%.py}
  copy="$WORK/$name$tag"
  mkdir -p "$copy"

  # the tree as it is now: tracked and untracked files that git does not ignore
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$copy"

  also=()
  for p in "$copy"/* "$copy"/.github; do
    [ -e "$p" ] || continue
    b=$(basename "$p")
    case "$b" in cnnreport | tests | mutants | pyproject.toml) ;; *) also+=("$b") ;; esac
  done
  prefixed=()
  for p in "${patterns[@]}"; do prefixed+=("cnnreport.${name}.$p"); done

  cat >>"$copy/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["cnnreport"]
only_mutate = ["cnnreport/$module"]
pytest_add_cli_args_test_selection = [$(toml_list "${tests[@]}")]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "mutation_fresh_state"]
also_copy = [$(toml_list "${also[@]}")]
EOF
  # mutants/ must exist before Python starts: a sys.path entry that is missing then is never
  # searched again, and the tests would import the unmutated package installed elsewhere.
  mkdir -p "$copy/mutants"

  echo "mutation: $module against ${tests[*]}${patterns[*]:+ (only ${patterns[*]})}"
  start=$(date +%s)
  set +e
  (
    cd "$copy"
    unset PYTHONPATH
    export PYTHONPATH="$WORK/hook:$copy/mutants" CNNREPORT_MUTATION_ROOT="$copy"
    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg
    # mutmut's own entry point (python -m mutmut would import its __main__ twice)
    "$PYTHON" -c 'import sys; from mutmut.__main__ import cli; sys.argv[0] = "mutmut"; cli()' \
      run --max-children "$JOBS" "${prefixed[@]}"
  ) >"$OUT/$name$tag.log" 2>&1
  status=$?
  set -e
  seconds=$(($(date +%s) - start))
  if [ ! -f "$copy/mutants/cnnreport/$module.meta" ] || grep -aq "failed to collect stats\|Stopping early" "$OUT/$name$tag.log"; then
    echo "mutation: $module: mutmut failed (exit $status), see $OUT/$name$tag.log" >&2
    rows+=("cnnreport/$module	-	-	-	-	-	-	failed	$seconds")
    continue
  fi
  row=$(cd "$copy" && env -u PYTHONPATH "$PYTHON" "$ROOT/scripts/mutation_report.py" "cnnreport/$module" \
    --out "$OUT" --name "$name$tag" --seconds "$seconds" --only "${prefixed[@]}")
  rows+=("$row	$seconds")
  [ "$status" -eq 0 ] || echo "mutation: $module: mutmut exited $status, see $OUT/$name$tag.log" >&2
  echo "mutation: $module done in ${seconds}s: $OUT/$name$tag.survivors.txt"
done

{
  printf 'module\tmutants\tkilled\tsurvived\tno_tests\ttimeout\tother\tscore%%\tseconds\n'
  printf '%s\n' "${rows[@]}"
} | tee "$OUT/scores.tsv" | column -t -s $'\t'
