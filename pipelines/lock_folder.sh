#!/bin/sh
# Makes at once in one folder of settings stamps (a run folder, build/models, make prune's folder,
# ...) only while they want the same settings of each stamp both reach:
#   sh pipelines/lock_folder.sh MAKE_PID STARTED FOLDER NAME VALUES
# Run by the make MAKE_PID before the rule of its stamp FOLDER/.settings/NAME, whose settings it
# wants to be VALUES (the stamp's first line, as that make writes it).
# Two makes at once on one folder with other settings left a table made with one's settings under
# the other's stamp, up to date to make (one rewrote the stamp while the other measured: the
# reviewers' F4, 2026-12-07). So each make that works in the folder leaves a record,
# FOLDER/.lock/make.WHERE.PID.START (its command, then a line `NAME CHECKSUM` for each stamp it
# reached, the checksum of VALUES), locked (flock) by a process that waits for the make to exit and
# then removes it; a record whose lock can be taken is of a make that has ended (killed with kill
# -9, say), and is removed. WHERE (the boot's id and the PID namespace) and START (the process's
# start time) name the make, not its PID alone: two containers sharing a folder each have a make
# of PID 1, and a PID is reused once its process has ended (reviewer, 2026-12-07); whether a make
# of another namespace or host runs is told by its lock alone, as /proc here does not show it.
# A make that wants other settings of a stamp than another running make reached it with is
# refused, naming the folder, the stamp and the other make: two `make demo` on a run folder, or
# `make prune K=6` and `K=7`, are let through by it; `make demo` beside `make demo MASKS=400` is
# not. Refused, not made to wait: two makes each waiting for a folder the other
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
# A folder this make cannot write: it cannot change the folder's stamps or outputs either (a make
# with nothing to do in a run of another user's, or a read-only one), so there is nothing to lock.
[ -w "$folder" ] || [ ! -e "$folder" ] || exit 0
locks=$folder/.lock
checksum=$(printf '%s\n' "$values" | cksum | cut -d ' ' -f 1)

# The fields of /proc/$1/stat after the command name (which may hold spaces: those after its
# closing parenthesis), from the state on; none if process $1 is not running (a zombie that its
# parent has not reaped yet has ended). Read by the shell itself: the holder asks every 0.5 s.
stat_of() {
  [ -n "$1" ] && read -r line < /proc/"$1"/stat 2> /dev/null || return 0
  line=${line##*) }
  [ "${line%% *}" != Z ] && printf '%s\n' "$line"
}
# The start time of process $1 (clock ticks since boot), empty if it is not running.
start_of() {
  set -- $(stat_of "$1")
  [ $# -ge 20 ] && shift 19 && printf '%s\n' "$1"
  return 0
}
# The parent of process $1.
parent_of() {
  set -- $(stat_of "$1")
  [ $# -ge 2 ] && printf '%s\n' "$2"
  return 0
}
where=$({ cat /proc/sys/kernel/random/boot_id; readlink /proc/self/ns/pid; } 2> /dev/null | cksum | cut -d ' ' -f 1)
make_start=$(start_of "$make_pid")
[ -n "$make_start" ] || { echo "make: cannot read the start time of make $make_pid (/proc/$make_pid/stat)" >&2; exit 1; }

# Whether the make of record PID, START (of this host and namespace) is this one or one it was
# started by.
is_this_make_or_its_caller() {
  pid=$make_pid
  while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
    [ "$pid" = "$1" ] && [ "$(start_of "$pid")" = "$2" ] && return 0
    pid=$(parent_of "$pid")
  done
  return 1
}

if ! mkdir -p "$locks" 2> /dev/null || { [ ! -e "$locks/guard" ] && ! : >> "$locks/guard"; } 2> /dev/null; then
  echo "make: warning: cannot write $locks: $folder is not locked against another make at once" >&2
  exit 0
fi
# The records are read and written under the guard, held only while this script runs (open for
# reading, so that a guard left by another user, say by a `sudo make`, serves too).
exec 8< "$locks/guard" || exit 1
flock 8 || exit 1

record=$locks/make.$where.$make_pid.$make_start
for other in "$locks"/make.*; do
  [ -e "$other" ] || continue
  [ "$other" = "$record" ] && continue
  id=${other##*/make.}
  other_where=${id%%.*} rest=${id#*.}
  other_pid=${rest%%.*} other_start=${rest#*.}
  # Its make has ended: killed (its lock is free), or, of this host and namespace, no longer
  # running (just exited: its holder, which polls, has not noticed yet, and a make run right
  # after another must not be refused for it).
  if flock -n "$other" true \
    || { [ "$other_where" = "$where" ] && [ "$(start_of "$other_pid")" != "$other_start" ]; }; then
    rm -f "$other" 2> /dev/null
    continue
  fi
  [ "$other_where" = "$where" ] && is_this_make_or_its_caller "$other_pid" "$other_start" && continue
  theirs=$(awk -v name="$name" 'NR > 1 && $1 == name { print $2 }' "$other")
  if [ -n "$theirs" ] && [ "$theirs" != "$checksum" ]; then
    echo "make: $folder is in use by another make (pid $other_pid: $(head -n 1 "$other")), with other" \
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

if [ -e "$record" ]; then
  printf '%s %s\n' "$name" "$checksum" >> "$record" # a later stamp of this make (held already)
  exit
fi
if ! { { tr '\0' ' ' < /proc/"$make_pid"/cmdline && echo && printf '%s %s\n' "$name" "$checksum"; } \
  > "$record.new" && mv -f "$record.new" "$record"; } 2> /dev/null; then
  rm -f "$record.new" 2> /dev/null
  echo "make: warning: cannot write $locks: $folder is not locked against another make at once" >&2
  exit 0
fi
exec 9< "$record" || exit 1
flock -n 9 || exit 1
# The holder: keeps descriptor 9 (the record's lock) open while the make runs, and nothing else
# of the make's (its output may be a pipe that someone reads to its end).
(
  while [ "$(start_of "$make_pid")" = "$make_start" ]; do sleep 0.5; done
  rm -f "$record"
) < /dev/null > /dev/null 2>&1 8>&- &
