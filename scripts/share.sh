#!/usr/bin/env bash
# Set up this clone to share artifacts with the team through DVC (docs/hpc.md):
#
#   scripts/share.sh REMOTE [SHARED_CACHE]        (or: make share REMOTE=... [CACHE=...])
#
#   REMOTE        where `dvc push` stores and `dvc pull` fetches artifacts: a directory on a shared
#                 filesystem (HPC), or s3://bucket/prefix (needs `pip install dvc-s3` and AWS
#                 credentials as usual: AWS_PROFILE, ~/.aws/credentials, ...)
#   SHARED_CACHE  HPC: a DVC cache directory the whole team uses. Files are linked from it
#                 (symlinks) rather than copied, so each model and image set exists once on disk
#                 and a teammate's results are there without a pull.
#
# The settings are this clone's own (.dvc/config.local), since each member may reach the remote
# by a different path; run it once per clone. It is safe to run again.
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
remote=$1 cache=${2:-}
cd "$(git rev-parse --show-toplevel)"

case "$remote" in
    s3://*) python -c "import dvc_s3" 2>/dev/null \
                || echo "share: note: pushing to S3 needs the dvc-s3 package: pip install dvc-s3" >&2 ;;
    *://*) ;;
    *) mkdir -p "$remote"; remote=$(realpath "$remote") ;;
esac
dvc remote add --local --force --default team "$remote"

if [ -n "$cache" ]; then
    mkdir -p "$cache"
    chmod g+rwxs "$cache"                      # new files belong to the directory's group
    dvc cache dir --local "$(realpath "$cache")"
    dvc config --local cache.shared group      # group members can read and add to it
    dvc config --local cache.type symlink      # link, never copy
    [ -f dvc.lock ] && dvc checkout --relink -q 2>/dev/null || true   # turn existing copies into links
fi
echo "share: remote team -> $remote${cache:+; shared cache $cache (symlinks)}"
dvc config --local --list | sed 's/^/  /'
