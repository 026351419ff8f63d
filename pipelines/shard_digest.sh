#!/bin/sh
# pipelines/shard_digest.sh MASKS TOKENS MODEL SETTINGS: the digests that name a shard job's
# working file and finished table (pipelines/Snakefile, evaluate_shard), newest scheme first, on
# one line: what a shard measures is a function of the mask table's rows, the token table, the
# model's manifest and SETTINGS (the kind of device and the runtime flags that may change an NLL),
# so a file named by another digest is never resumed, and one named by this digest is.
#   1. Each part with its length before it (a decimal line), so that no two lists of parts hash
#      alike: parts hashed one after the other alone ran together ("ab" + "c" and "a" + "bc" are
#      the same bytes), a collision a length prefix cannot have.
#   2. The same parts without their lengths: the files of run folders made before 1 (2026-12-07),
#      which a job that has none of 1 takes.
#   3. The whole masks file, footer included, without lengths: the files of run folders made
#      before 2026-12-06, taken likewise.
# The masks enter 1 and 2 by the table's rows, its bytes before the Parquet footer, not by the
# footer's provenance: a later round's table records the previous round's evaluations by their
# file's hash, wall-clock seconds included, so an earlier round evaluated again changed every
# later round's digest, and their new masks were evaluated again although they were the same.
set -eu
masks=$1 tokens=$2 model=$3 settings=$4
# A Parquet file ends with its footer, the footer's length (4 bytes, little-endian) and PAR1.
set -- $(tail -c 8 "$masks" | od -An -tu1)
rows=$(( $(wc -c < "$masks") - 8 - $1 - 256 * $2 - 65536 * $3 - 16777216 * $4 ))
digest() { sha256sum | cut -c1-16; }
# A file's length as a decimal line (wc pads it on some systems: taken as a number).
length() { printf '%s\n' "$(( $(wc -c < "$1") ))"; }
separated=$( { printf '%s\n' "$rows"; head -c "$rows" "$masks"
               length "$tokens"; cat "$tokens"
               length "$model"; cat "$model"
               printf '%s\n%s' "$(( $(printf '%s' "$settings" | wc -c) ))" "$settings"; } | digest)
unseparated=$( (head -c "$rows" "$masks"; cat "$tokens" "$model"; echo "$settings") | digest)
whole=$( (cat "$masks" "$tokens" "$model"; echo "$settings") | digest)
echo "$separated $unseparated $whole"
