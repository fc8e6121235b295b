#!/usr/bin/env bash
# make demo: the whole system on this machine. Starts a Consul dev agent (unless one
# answers at 127.0.0.1:8500), puts examples/formations/hello in a local git repository
# (.demo/hello), runs `gilliam-sync up` on it, and prints the instances' URLs and the Consul
# UI. Ctrl-C stops everything it started, containers included.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
demo=$root/.demo
bin=$root/bin/gilliam-sync
consul=$root/.cache/bin/consul
host=demo
router_port=${ROUTER_PORT:-8080}
mkdir -p "$demo"

pids=()
started_consul=
cleanup() {
	trap - INT TERM EXIT
	# Keep going whatever fails, even writes to a terminal or pipe that is gone.
	set +e
	trap '' PIPE
	echo
	echo "demo: stopping"
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	ids=$(docker ps -aq --filter "label=io.gilliam.host=$host")
	if [ -n "$ids" ]; then
		echo "demo: removing containers: $(echo $ids)"
		docker rm -f $ids >/dev/null
	fi
	nets=$(docker network ls -q --filter "label=io.gilliam.host=$host")
	if [ -n "$nets" ]; then
		echo "demo: removing networks: $(docker network inspect -f '{{.Name}}' $nets | tr '\n' ' ')"
		docker network rm $nets >/dev/null
	fi
	if [ -z "$started_consul" ]; then
		# Not our agent: take our registrations out of it (ours carry meta host=demo).
		for id in $(curl -fsS "http://127.0.0.1:8500/v1/agent/services?filter=Meta.host==\"$host\"" 2>/dev/null | grep -o '"ID": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/'); do
			curl -fsS -X PUT "http://127.0.0.1:8500/v1/agent/service/deregister/$id" >/dev/null || true
		done
	fi
	echo "demo: stopped"
}
trap cleanup INT TERM EXIT

if curl -fsS -m 2 http://127.0.0.1:8500/v1/status/leader >/dev/null 2>&1; then
	echo "demo: using the Consul agent at 127.0.0.1:8500"
else
	echo "demo: starting a Consul dev agent (log: .demo/consul.log)"
	"$consul" agent -dev -client 127.0.0.1 -bind 127.0.0.1 -log-level warn >"$demo/consul.log" 2>&1 &
	pids+=($!)
	started_consul=1
	for _ in $(seq 100); do
		leader=$(curl -fsS -m 1 http://127.0.0.1:8500/v1/status/leader 2>/dev/null || true)
		[ -n "$leader" ] && [ "$leader" != '""' ] && break
		sleep 0.2
	done
fi

if [ ! -d "$demo/hello/.git" ]; then
	echo "demo: creating the repository .demo/hello from examples/formations/hello"
	rm -rf "$demo/hello"
	cp -r examples/formations/hello "$demo/hello"
	git -C "$demo/hello" init -q -b main
	git -C "$demo/hello" add -A
	git -C "$demo/hello" -c user.name=demo -c user.email=demo@gilliam.invalid commit -q -m "hello formation"
fi

echo "demo: gilliam-sync up (log: .demo/up.log)"
"$bin" up --repo "$demo/hello" --data "$demo/data" --host-id "$host" --poll 2s \
	--router-listen "127.0.0.1:$router_port" >"$demo/up.log" 2>&1 &
pids+=($!)

echo "demo: waiting for the hello formation to build and serve (the first build takes about 30s)"
for _ in $(seq 300); do
	if ! kill -0 "${pids[-1]}" 2>/dev/null; then
		echo "demo: gilliam-sync up exited; the end of .demo/up.log:"; tail -20 "$demo/up.log"; exit 1
	fi
	status=$("$bin" status hello --output json 2>/dev/null || true)
	passing=$(grep -c '"health": "passing"' <<<"$status" || true)
	if [ "$passing" -ge 2 ] && curl -fsS -m 2 -o /dev/null -H "Host: hello.localhost" "http://127.0.0.1:$router_port/" 2>/dev/null; then break; fi
	sleep 1
done

"$bin" status hello || true
echo
echo "The hello formation is serving, through the router (ROUTER_PORT=$router_port):"
echo "  http://hello.localhost:$router_port/   $(curl -fsS -m 2 -H "Host: hello.localhost" "http://127.0.0.1:$router_port/" || echo '(not answering)')"
echo "and each instance directly:"
for addr in $(grep -o '"address": "[^"]*"' <<<"$status" | sed 's/.*"\([^"]*\)"$/\1/'); do
	echo "  http://$addr/   $(curl -fsS -m 2 "http://$addr/" || echo '(not answering)')"
done
echo
echo "Consul UI:   http://127.0.0.1:8500/ui/  (services hello-web and gilliam-host)"
echo "Try:         edit .demo/hello/main.go or gilliam.yml, git commit, and watch .demo/up.log"
echo "             bin/gilliam-sync status"
echo "Ctrl-C stops everything the demo started."
wait "${pids[-1]}"
