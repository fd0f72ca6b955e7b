#!/bin/bash
# SPDX-License-Identifier: MIT
# bench/steal.sh CMD...: runs CMD and prints the share of the host's CPU time the
# hypervisor stole meanwhile (/proc/stat), beside the busy ticks: a run with
# much steal measured the neighbours, not the code.
read -r _ u n s i w q sq st _ < <(head -1 /proc/stat)
"$@"; rc=$?
read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ < <(head -1 /proc/stat)
tot=$(( (u2+n2+s2+i2+w2+q2+sq2+st2) - (u+n+s+i+w+q+sq+st) ))
echo "steal: $((st2-st)) of $tot ticks; busy $(( (u2+n2+s2+q2+sq2)-(u+n+s+q+sq) ))"
exit $rc
