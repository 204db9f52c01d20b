#!/bin/bash
# mem.sh RUN [extra mount flags]: mounts the 20k-file layer with ociseek mount,
# prints VmRSS/VmHWM idle, after find, after reading every file.
run=$1; shift
mp=/tmp/bench/mp$run; mkdir -p $mp
ld=sha256:6e287c70c34c79b3fe0602e9aa4fefb5184edb4b2a565cae3cd84a99d89dae99
log=/tmp/bench/mount$run.log
/tmp/bench/ociseek mount "$@" 127.0.0.1:35123/bench/mem20k:v1 $ld $mp > $log 2>&1 &
pid=$!
for i in $(seq 300); do grep -q '^mounted' $log && break; sleep 0.1; done
st() { awk -v t="$1" '/VmRSS|VmHWM/{printf "%s %s=%s kB  ", t, $1, $2} END{print ""}' /proc/$pid/status; }
sleep 5; st idle
n=$(find $mp | wc -l); st "after-find($n)"
sleep 2; st after-find-settled
find $mp -type f -print0 | xargs -0 cat | wc -c | sed 's/^/bytes read: /'
st after-read-all
sleep 10; st idle-after-read
kill -INT $pid; wait $pid; cat $log
