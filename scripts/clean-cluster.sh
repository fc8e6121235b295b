#!/usr/bin/env bash
# make clean-cluster: removes what a killed run of the multi-host tests (internal/cluster)
# left behind: the processes, container cgroups, mounts, network namespaces, veths and files
# of every cluster named gcl-*. A cluster whose test process still runs (its pid in
# /tmp/gilliam-cluster/<name>/owner) is left alone, unless FORCE=1.
set -uo pipefail

base=/tmp/gilliam-cluster

# Clusters: the folders, the namespaces and the root veths named gcl-xxxx.
names=$( { ls "$base" 2>/dev/null; ip netns list 2>/dev/null | awk '{print $1}'; ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1; } \
	| grep -oE '^gcl-[0-9a-f]{4}' | sort -u)

for name in $names; do
	owner=$(cat "$base/$name/owner" 2>/dev/null || true)
	if [ "${FORCE:-0}" != 1 ] && [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then
		echo "clean-cluster: $name belongs to running process $owner: left alone (FORCE=1 to remove it)"
		continue
	fi
	echo "clean-cluster: removing $name"
	for round in 1 2 3; do
		pids=""
		# Processes in its namespaces (engines, containerd, shims, agents, host daemons).
		for ns in $(ip netns list | awk '{print $1}' | grep "^$name-"); do
			pids="$pids $(ip netns pids "$ns" 2>/dev/null)"
		done
		# Its containers, by cgroup.
		for f in $(find /sys/fs/cgroup/*/"$name"-* -name cgroup.procs 2>/dev/null); do
			pids="$pids $(cat "$f")"
		done
		# Root-namespace processes started on its files (Consul servers, sync daemons).
		for d in /proc/[0-9]*; do
			if { tr '\0' ' ' < "$d/cmdline"; } 2>/dev/null | grep -q -- "$base/$name/"; then
				pids="$pids ${d#/proc/}"
			fi
		done
		pids=$(echo $pids | tr ' ' '\n' | grep -vx "$$" | sort -u)
		[ -z "$pids" ] && break
		kill -9 $pids 2>/dev/null
		sleep 0.5
	done
	awk -v d="$base/$name/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null
	done
	find /sys/fs/cgroup/*/"$name"-* -depth -type d -exec rmdir {} \; 2>/dev/null
	for ns in $(ip netns list | awk '{print $1}' | grep "^$name-"); do
		ip netns delete "$ns"
	done
	ip link delete "$name" 2>/dev/null
	rm -rf "${base:?}/$name"
done
rmdir "$base" 2>/dev/null
echo "clean-cluster: done"
