#!/bin/sh
# Debian packages for the synthetic corpus (benchmarks/corpus/build_corpus.py). Run as root.
#
#   sh benchmarks/corpus/install.sh             free voices (Debian main) + texts
#   sh benchmarks/corpus/install.sh --non-free  also RHVoice, SVOX pico, mbrola, festival rab: adds the
#                                               contrib/non-free components in a separate source list
#                                               (/etc/apt/sources.list.d/gsvkit-corpus-nonfree.sources)
set -eu

FREE="espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fortunes bible-kjv bible-kjv-text"
NONFREE="rhvoice rhvoice-english libttspico-utils mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 festvox-rablpc16k"

non_free=0
for arg in "$@"; do
  case "$arg" in
    --non-free) non_free=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

if [ "$non_free" = 1 ]; then
  . /etc/os-release
  list=/etc/apt/sources.list.d/gsvkit-corpus-nonfree.sources
  # Same mirror and suite as the system, only the extra components.
  cat > "$list" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME}
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $FREE
if [ "$non_free" = 1 ]; then
  # shellcheck disable=SC2086
  apt-get install -y --no-install-recommends $NONFREE
fi
