#!/usr/bin/env bash
# Runs every Go fuzz target of the module, one after another, each for
# $FUZZTIME (go test takes one -fuzz target per package and run). $FUZZ
# selects targets by a regular expression on their names. Inputs that
# make a target fail are written to the package's testdata/fuzz/<target>/;
# the rest of the generated corpus stays in Go's cache, outside the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
# Interesting inputs are minimized for at most this long: the images some
# targets start from are kilobytes, and minimizing them for the default
# minute stalls the run.
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-5s}
FUZZ=${FUZZ:-.}

failed=()
n=0
for pkg in $("$GO" list ./...); do
	for target in $("$GO" test -list '^Fuzz' "$pkg" | grep '^Fuzz' | grep -E -- "$FUZZ" || true); do
		n=$((n + 1))
		echo "== $target ($pkg, $FUZZTIME)"
		if ! "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" "$pkg"; then
			failed+=("$pkg $target")
		fi
	done
done
if [ "$n" = 0 ]; then
	echo "no fuzz target matches $FUZZ" >&2
	exit 1
fi
if [ "${#failed[@]}" -gt 0 ]; then
	printf 'fuzz target failed: %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "all $n fuzz targets passed"
