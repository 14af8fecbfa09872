#!/usr/bin/env bash
# Run every cargo-fuzz target of fuzz/ for a bounded time each; exit 1 if any target
# crashed (a panic, a failed property, a leak or a sanitizer report), printing where
# libFuzzer left the input. Not part of scripts/test-all.sh: it takes minutes.
#
#   scripts/fuzz.sh                     every target, 60 s each
#   scripts/fuzz.sh 300                 every target, 300 s each
#   scripts/fuzz.sh 30 history_file     the named targets only
#   CGLEAK_FUZZ_SECONDS=120 scripts/fuzz.sh
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler; nightly-only compiler
# flags are allowed on the stable toolchain with RUSTC_BOOTSTRAP=1 (set here). New inputs
# go to fuzz/corpus/<target> (git-ignored), crashes to fuzz/artifacts/<target>/, logs to
# fuzz/logs/<target>.log (git-ignored).
set -uo pipefail

cd "$(dirname "$0")/../fuzz" || exit 2
secs=${CGLEAK_FUZZ_SECONDS:-60}
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    secs=$1
    shift
fi
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# Build once, so each target's time is spent fuzzing.
if ! build_log=$(cargo fuzz build -O 2>&1); then
    tail -30 <<<"$build_log" >&2
    echo "fuzz.sh: the fuzz targets do not build" >&2
    exit 2
fi

# Dictionaries: the literals each parser looks for.
dict_of() {
    case $1 in
        incident_parser | kmsg_record | journal_json) echo "-dict=incidents.dict" ;;
        grub_default_edit | bls_entry_edit | grubenv_edit) echo "-dict=nokmem.dict" ;;
    esac
}

mkdir -p logs
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    seeds=()
    [[ -d seeds/$t ]] && seeds=("seeds/$t")
    log="logs/$t.log"
    # shellcheck disable=SC2046 # the dictionary flag is one word or none
    cargo fuzz run -O "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=25 $(dict_of "$t") >"$log" 2>&1
    rc=$?
    runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    corpus=$(grep -o 'corp: [0-9]*' "$log" | tail -1)
    if [[ $rc -eq 0 ]]; then
        printf '%-18s ok      %s, %s, %s\n' "$t" "${runs:-?}" "${cov:-cov: ?}" "${corpus:-corp: ?}"
    else
        printf '%-18s FAILED  exit %s; %s\n' "$t" "$rc" "$log"
        grep -m3 -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written to' "$log" | sed 's/^/    /'
        failed+=("$t")
    fi
done

# kubelet_config's host roots, left by runs that have ended (libFuzzer exits without cleaning up).
for d in /dev/shm/cgleak-fuzz-kubelet-* "${TMPDIR:-/tmp}"/cgleak-fuzz-kubelet-*; do
    [[ -d $d ]] || continue
    kill -0 "${d##*-}" 2>/dev/null || rm -rf "$d"
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${secs} s each: no crash"
