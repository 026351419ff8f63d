#!/bin/sh
# Makes at once in one folder of settings stamps (a run folder, build/models, make prune's folder,
# ...) only while they want the same settings of each stamp both reach:
#   sh pipelines/lock_folder.sh MAKE_PID STARTED FOLDER NAME VALUES
# Run by the make MAKE_PID before the rule of its stamp FOLDER/.settings/NAME, whose settings it
# wants to be VALUES (the stamp's first line, as that make writes it).
# Two makes at once on one folder with other settings left a table made with one's settings under
# the other's stamp, up to date to make (one rewrote the stamp while the other measured: the
# reviewers' F4, 2026-12-07). So each make that works in the folder leaves a record,
# FOLDER/.lock/make.PID (its command, then a line `NAME CHECKSUM` for each stamp it reached, the
# checksum of VALUES), locked (flock) by a process that waits for the make to exit and then removes
# it; a record whose lock can be taken is of a make that has ended (killed with kill -9, say), and
# is removed. A make that wants other settings of a stamp than another running make reached it
# with is refused, naming the folder, the stamp and the other make: two `make demo` on a run
# folder, or `make prune K=6` and `K=7`, work side by side; `make demo` beside `make demo
# MASKS=400` does not. Refused, not made to wait: two makes each waiting for a folder the other
# holds would wait for ever, and after a wait what this make decided from the stamps (when it read
# the makefiles) may no longer hold. For that reason the stamp, rewritten or restored since STARTED
# (date +%s.%N, when the make read it; its ctime, which a rename sets too) by a make that ran and
# ended in between, refuses the make too, unless it now holds VALUES. The record of this make (its
# other stamps: under make -j this runs for several at once, one at a time under the guard) and
# those of a make that ran it (a recursive $(MAKE)) are not another's.
set -u
make_pid=$1 started=$2 folder=$3 name=$4 values=${5-}
if ! command -v flock > /dev/null; then
  echo "make: warning: no flock (util-linux): $folder is not locked against another make at once" >&2
  exit 0
fi
locks=$folder/.lock
mkdir -p "$locks" || exit 1
checksum=$(printf '%s\n' "$values" | cksum | cut -d ' ' -f 1)

# Whether process $1 is MAKE_PID or one it was started by.
is_this_make_or_its_caller() {
  pid=$make_pid
  while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
    [ "$pid" = "$1" ] && return 0
    read -r _ _ _ pid _ < /proc/"$pid"/stat 2> /dev/null || return 1
  done
  return 1
}

# Whether process $1 runs (not a zombie that its parent has not reaped yet).
running() {
  [ -n "$1" ] && read -r _ _ state _ < /proc/"$1"/stat 2> /dev/null && [ "$state" != Z ]
}

# The records are read and written under the guard, held only while this script runs.
exec 8>> "$locks/guard" || exit 1
flock 8 || exit 1

for record in "$locks"/make.*; do
  [ -e "$record" ] || continue
  owner=${record##*/make.}
  # Its make has ended: killed (its lock is free), or just exited (its holder, which polls, has
  # not noticed yet: a make run right after another must not be refused for it).
  if ! running "$owner" || flock -n "$record" true; then
    rm -f "$record"
    continue
  fi
  is_this_make_or_its_caller "$owner" && continue
  theirs=$(awk -v name="$name" 'NR > 1 && $1 == name { print $2 }' "$record")
  if [ -n "$theirs" ] && [ "$theirs" != "$checksum" ]; then
    echo "make: $folder is in use by another make (pid $owner: $(head -n 1 "$record")), with other" \
      "settings of $folder/.settings/$name than this one's: two makes at once on one folder with other" \
      "settings can leave a table made with one's settings marked up to date under the other's" \
      "(docs/reliability.md); run this one again when that one has ended" >&2
    exit 1
  fi
done

stamp=$folder/.settings/$name
if [ -n "$(find "$stamp" -maxdepth 0 -newerct "@$started" -print 2> /dev/null)" ] \
  && [ "$(head -n 1 "$stamp")" != "$values" ]; then
  echo "make: the settings of $folder changed after this make read them ($folder/.settings/$name)," \
    "by a make that ran in the meantime: run make again" >&2
  exit 1
fi

record=$locks/make.$make_pid
if [ -e "$record" ]; then
  printf '%s %s\n' "$name" "$checksum" >> "$record" # a later stamp of this make (held already)
  exit
fi
{ tr '\0' ' ' < /proc/"$make_pid"/cmdline && echo && printf '%s %s\n' "$name" "$checksum"; } > "$record.new" \
  && mv -f "$record.new" "$record" || exit 1
exec 9< "$record" || exit 1
flock -n 9 || exit 1
# The holder: keeps descriptor 9 (the record's lock) open while the make runs, and nothing else
# of the make's (its output may be a pipe that someone reads to its end).
(
  while running "$make_pid"; do sleep 0.5; done
  rm -f "$record"
) < /dev/null > /dev/null 2>&1 8>&- &
