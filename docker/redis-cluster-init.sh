#!/bin/sh
# Forms the Redis Cluster of docker/compose.cluster.yml and exits 0 once every node agrees on it;
# the one-shot `redis-init` service runs it, and the app services start only after it succeeded.
#
#   CLUSTER_NODES="redis-1:6379 redis-2:6379 ..."  CLUSTER_REPLICAS=1  CLUSTER_INIT_TIMEOUT=120
#
# Idempotent: when the nodes already know each other (a second `up`, a restarted stack with its
# volumes), nothing is created again; it only waits until the cluster is settled. A node that
# lost its volume is not re-added here: the wait times out and names the node instead.
set -eu

NODES=${CLUSTER_NODES:?CLUSTER_NODES names the nodes, host:port separated by spaces}
REPLICAS=${CLUSTER_REPLICAS:-1}
TIMEOUT=${CLUSTER_INIT_TIMEOUT:-120}

say() { echo "redis-cluster-init: $*" >&2; }
cli() { node=$1; shift; redis-cli -h "${node%:*}" -p "${node##*:}" "$@"; }
info_field() { cli "$1" CLUSTER INFO | tr -d '\r' | sed -n "s/^$2://p"; }
number() {  # number NODE FIELD: a numeric CLUSTER INFO field, or exit when the node does not say
    value=$(info_field "$1" "$2")
    case $value in
        '' | *[!0-9]*) say "cannot read $2 from $1 (CLUSTER INFO answered '$value')"; exit 1 ;;
    esac
    echo "$value"
}

count=0
formed=no
for node in $NODES; do
    count=$((count + 1))
    if [ "$(number "$node" cluster_known_nodes)" -gt 1 ] \
        || [ "$(number "$node" cluster_slots_assigned)" -gt 0 ]; then
        formed=yes
    fi
done

if [ "$formed" = no ]; then
    # CLUSTER MEET (which --cluster create sends) takes IP addresses only on Redis 7.0, so the
    # names are resolved here. Clients never see these IPs: the nodes announce their hostnames.
    addresses=""
    for node in $NODES; do
        ip=$(getent hosts "${node%:*}" | cut -d' ' -f1)
        [ -n "$ip" ] || { say "cannot resolve ${node%:*}"; exit 1; }
        addresses="$addresses $ip:${node##*:}"
    done
    say "creating the cluster:$addresses (replicas per primary: $REPLICAS)"
    # shellcheck disable=SC2086  # one argument per address
    redis-cli --cluster create $addresses --cluster-replicas "$REPLICAS" --cluster-yes
else
    say "the nodes already form a cluster: not creating it again"
fi

# Settled, as every node sees it: state ok, all nodes known, none flagged failing or still in
# the handshake, and each one's hostname known. Until a node has heard a peer's hostname (by
# gossip, within a second or so) it gives clients "?" for that peer's address in CLUSTER SLOTS.
settled() {
    for node in $NODES; do
        [ "$(info_field "$node" cluster_state)" = ok ] || return 1
        [ "$(info_field "$node" cluster_known_nodes)" = "$count" ] || return 1
        cli "$node" CLUSTER NODES | tr -d '\r' | awk '
            $2 !~ /,./ { bad = 1 }                           # ip:port@bus,hostname
            $3 ~ /fail|handshake|noaddr/ { bad = 1 }
            END { exit bad }' || return 1
    done
}

# Introduce a node again to each peer whose address it lost. Nodes find each other by IP, and a
# stack restarted with its volumes can come back with the IPs shuffled between containers: a
# node then reaches a stranger at a peer's old address, marks the peer `noaddr` and never
# looks for it again (nor does the peer, the other way round). CLUSTER MEET at the address the
# peer's name resolves to now fixes that: the handshake finds a known node id and updates it.
heal() {
    for node in $NODES; do
        cli "$node" CLUSTER NODES | tr -d '\r' | while read -r _id address flags _rest; do
            case $flags in *myself*) continue ;; esac
            host=${address##*,}
            [ "$host" != "$address" ] || continue  # its hostname is not known yet
            port=""
            for peer in $NODES; do [ "${peer%:*}" != "$host" ] || port=${peer##*:}; done
            ip=$(getent hosts "$host" | cut -d' ' -f1)
            [ -n "$port" ] && [ -n "$ip" ] && [ "${address%%:*}" != "$ip" ] || continue
            say "$node has $host at '${address%%@*}', but $host is $ip now: CLUSTER MEET $ip $port"
            cli "$node" CLUSTER MEET "$ip" "$port" >/dev/null || true
        done
    done
}

deadline=$(($(date +%s) + TIMEOUT))
until settled; do
    heal
    if [ "$(date +%s)" -ge "$deadline" ]; then
        say "the cluster did not settle within ${TIMEOUT}s; what each node sees:"
        for node in $NODES; do
            echo "--- $node" >&2
            cli "$node" CLUSTER NODES >&2 || true
        done
        exit 1
    fi
    sleep 0.5
done
say "cluster ready: $count nodes"
cli "${NODES%% *}" CLUSTER NODES >&2
