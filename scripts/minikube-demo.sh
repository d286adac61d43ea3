#!/usr/bin/env bash
# The whole chain on a real cluster: minikube, NATS with JetStream, Falco, falco-nats-gateway;
# a shell in an nginx pod; Falco's "Terminal shell in container" alert on the NATS subject
# falco.notice.terminal_shell_in_container. It fails unless the alert arrives in time.
#
#   scripts/minikube-demo.sh                 Falco 0.43 (chart 8.0.5): gRPC + HTTP fallback, dedup
#   scripts/minikube-demo.sh --falco 0.44    Falco 0.44+ (chart 9.x): HTTP only
#   scripts/minikube-demo.sh --dry-run       print every command, run none
#   KEEP=1 scripts/minikube-demo.sh          leave everything running afterwards
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/minikube-demo.sh [--falco 0.43|0.44] [--profile NAME] [--driver DRIVER]
                                [--timeout SECONDS] [--dry-run]

  --falco 0.43   Falco 0.43 with chart 8.0.5 (default): the gateway runs as a DaemonSet and reads
                 Falco's gRPC socket; Falco's http_output is the fallback and the gateway drops
                 the second copy of each alert.
  --falco 0.44   Falco 0.44+ with chart 9.x: http_output only; the gateway runs as a Deployment.
  --profile      minikube profile to start or reuse (default falco-nats-demo; MINIKUBE_PROFILE)
  --driver       minikube driver for a new profile (default: kvm2 on Linux, vfkit on macOS,
                 virtualbox elsewhere; MINIKUBE_DRIVER)
  --timeout      seconds to wait for the alert on NATS (default 120; ALERT_TIMEOUT)
  --dry-run      print every command it would run, and run none

Environment: KEEP=1 keeps the cluster and releases; MINIKUBE_CPUS, MINIKUBE_MEMORY size a new
profile; FALCO_CHART_VERSION and NATS_CHART_VERSION override the chart versions.
EOF
}

# --- options ----------------------------------------------------------------------------------
FALCO=0.43
DRY_RUN=0
PROFILE=${MINIKUBE_PROFILE:-falco-nats-demo}
DRIVER=${MINIKUBE_DRIVER:-}
ALERT_TIMEOUT=${ALERT_TIMEOUT:-120}
KEEP=${KEEP:-0}

while (($#)); do
    case $1 in
        --falco) FALCO=${2:?--falco needs 0.43 or 0.44}; shift 2 ;;
        --falco=*) FALCO=${1#*=}; shift ;;
        --profile) PROFILE=${2:?--profile needs a name}; shift 2 ;;
        --profile=*) PROFILE=${1#*=}; shift ;;
        --driver) DRIVER=${2:?--driver needs a minikube driver}; shift 2 ;;
        --driver=*) DRIVER=${1#*=}; shift ;;
        --timeout) ALERT_TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
        --timeout=*) ALERT_TIMEOUT=${1#*=}; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'minikube-demo: unknown argument %q\n\n' "$1" >&2; usage >&2; exit 2 ;;
    esac
done

if ! [[ $ALERT_TIMEOUT =~ ^[0-9]+$ ]] || ((ALERT_TIMEOUT == 0)); then
    printf 'minikube-demo: --timeout %q is not a whole number of seconds\n' "$ALERT_TIMEOUT" >&2
    exit 2
fi

# Parameter expansion rather than dirname: nothing outside bash may run before the
# prerequisites are checked.
SCRIPT_DIR=${BASH_SOURCE[0]%/*}
[[ $SCRIPT_DIR == "${BASH_SOURCE[0]}" ]] && SCRIPT_DIR=.
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

# --- what each Falco generation installs ------------------------------------------------------
case $FALCO in
    0.43)
        FALCO_CHART_VERSION=${FALCO_CHART_VERSION:-8.0.5}
        FALCO_VALUES=$ROOT/deploy/falco-0.43-values.yaml
        GATEWAY_VALUES=$ROOT/deploy/gateway-0.43-values.yaml
        GATEWAY_WORKLOAD=daemonset/falco-nats-gateway
        ;;
    0.44 | 0.44+)
        FALCO=0.44
        FALCO_CHART_VERSION=${FALCO_CHART_VERSION:-^9.0.0}
        FALCO_VALUES=$ROOT/deploy/falco-0.44-values.yaml
        GATEWAY_VALUES=$ROOT/deploy/gateway-0.44-values.yaml
        GATEWAY_WORKLOAD=deployment/falco-nats-gateway
        ;;
    *)
        printf 'minikube-demo: --falco %q: use 0.43 (gRPC + HTTP) or 0.44 (HTTP only)\n' "$FALCO" >&2
        exit 2
        ;;
esac
# The NATS chart's 2.x line (its version follows nats-server's since 2.12); deploy/nats-values.yaml
# is checked against this release (tests/k8s/test_deploy_values.py).
NATS_CHART_VERSION=${NATS_CHART_VERSION:-2.14.2}
NATS_VALUES=$ROOT/deploy/nats-values.yaml
CHART=$ROOT/charts/falco-nats-gateway
# Built inside minikube and never pulled (pullPolicy Never): the tag only has to be unique there.
IMAGE_REPOSITORY=falco-nats-gateway
IMAGE_TAG=demo
# Namespace falco-nats-demo with the pod nginx, as deploy/demo-nginx.yaml declares them.
DEMO_NAMESPACE=falco-nats-demo
TRIGGER_MANIFEST=$ROOT/deploy/demo-nginx.yaml
SUBJECT=falco.notice.terminal_shell_in_container
RULE='Terminal shell in container'

# Every cluster command names the profile's context: the demo never touches another cluster.
KUBECTL=(kubectl --context "$PROFILE")
HELM=(helm --kube-context "$PROFILE")

# --- helpers ----------------------------------------------------------------------------------
step() { printf '\n==> %s\n' "$*"; }

# A word as any POSIX shell reads it back: bare when that is safe, else in single quotes.
shell_quote() {
    local word=$1 q="'"
    if [[ $word =~ ^[A-Za-z0-9_@%+=:,./^-]+$ ]]; then
        printf '%s' "$word"
    else
        printf "'%s'" "${word//$q/$q\\$q$q}"
    fi
}
command_line() {
    local word line=
    for word in "$@"; do line+="${line:+ }$(shell_quote "$word")"; done
    printf '%s' "$line"
}

# Print a command as it would be typed, then run it (or only print it, with --dry-run).
show() { printf '+ %s\n' "$(command_line "$@")"; }
run() {
    show "$@"
    ((DRY_RUN)) || "$@"
}

# Retry a command every 2 s until it succeeds (and, with a non-empty `expect`, prints that
# text) or `seconds` pass; quiet until it gives up.
retry() {
    local seconds=$1 what=$2 expect=$3
    shift 3
    if [[ -n $expect ]]; then
        printf '+ %s | %s\n' "$(command_line "$@")" "$(command_line grep -F "$expect")"
    else
        show "$@"
    fi
    ((DRY_RUN)) && return 0
    local deadline=$((SECONDS + seconds)) out
    # The output is captured, not piped to `grep -q`: with pipefail, grep quitting early would
    # fail the pipeline through SIGPIPE.
    until out=$("$@" 2>&1) && [[ $out == *"$expect"* ]]; do
        if ((SECONDS >= deadline)); then
            printf 'minikube-demo: %s: not there after %s s; last output:\n%s\n' "$what" "$seconds" "$out" >&2
            return 1
        fi
        sleep 2
    done
}

# Falco's rule fires only for a shell with a terminal (proc.tty != 0), and `kubectl exec -t`
# allocates one only when its own stdin is a terminal. Without one (CI, a pipe), script(1)
# gives kubectl a pseudo-terminal.
with_tty() {
    if [[ -t 0 ]]; then
        run "$@"
        return
    fi
    case $(uname -s) in
        Darwin | *BSD) run script -q /dev/null "$@" ;;
        # util-linux script runs the command with $SHELL -c: make that a POSIX shell.
        *) run env SHELL=/bin/sh script -q -e -c "$(command_line "$@")" /dev/null ;;
    esac
}

# --- prerequisites ----------------------------------------------------------------------------
missing=0
need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        printf 'minikube-demo: %s is required: %s\n' "$1" "$2" >&2
        missing=1
    fi
}
need minikube "https://minikube.sigs.k8s.io/docs/start/"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"
[[ -t 0 ]] || need script "util-linux (Linux) or the base system (macOS): it gives kubectl exec a terminal"
if ((missing)); then
    if ((DRY_RUN)); then
        printf 'minikube-demo: (dry run: going on without them)\n' >&2
    else
        exit 1
    fi
fi

if [[ -z $DRIVER ]]; then
    case $(uname -s) in
        Linux) DRIVER=kvm2 ;;
        Darwin) DRIVER=vfkit ;;
        *) DRIVER=virtualbox ;;
    esac
fi

# minikube 1.37 boots its VMs from an ISO whose kernel was built without BTF (kubernetes/minikube
# issue 21788, fixed in 1.38), and Falco's modern_ebpf driver needs BTF: Falco would never start.
# docker and podman run the node on this machine's kernel instead.
check_minikube_kernel() {
    local version
    show minikube version --short
    ((DRY_RUN)) && return 0
    version=$(minikube version --short 2>/dev/null || true)
    case $DRIVER in docker | podman | none | ssh) return 0 ;; esac
    if [[ $version == v1.37.* ]]; then
        printf 'minikube-demo: minikube %s boots the %s VM from an ISO whose kernel has no BTF
' "$version" "$DRIVER" >&2
        printf '  (kubernetes/minikube issue 21788, fixed in minikube 1.38): Falco'"'"'s modern_ebpf driver
' >&2
        printf '  cannot start there. Upgrade minikube to 1.38 or later, or run the node on this
' >&2
        printf '  machine'"'"'s kernel with --driver docker (it needs BTF: /sys/kernel/btf/vmlinux).
' >&2
        exit 1
    fi
}

# --- clean-up ---------------------------------------------------------------------------------
CREATED_PROFILE=0
SUB_PID=
SUB_OUT=
cleanup() {
    local status=$?
    trap - EXIT
    if [[ -n $SUB_PID ]]; then kill "$SUB_PID" 2>/dev/null || true; fi
    if [[ -n $SUB_OUT ]]; then rm -f "$SUB_OUT"; fi
    step "clean-up"
    if [[ $KEEP == 1 ]]; then
        printf 'KEEP=1: leaving minikube profile %s as it is. Remove it with: minikube delete -p %s\n' \
            "$PROFILE" "$PROFILE"
    elif ((CREATED_PROFILE)); then
        run minikube delete -p "$PROFILE" || true
    else
        # A profile that was there before the demo stays; only what the demo installed goes.
        run "${KUBECTL[@]}" delete namespace "$DEMO_NAMESPACE" --ignore-not-found --wait=false || true
        run "${HELM[@]}" uninstall falco --namespace falco --ignore-not-found || true
        run "${HELM[@]}" uninstall falco-nats-gateway --namespace falco --ignore-not-found || true
        run "${HELM[@]}" uninstall nats --namespace nats --ignore-not-found || true
    fi
    exit "$status"
}
trap cleanup EXIT
# Interrupted, the script still cleans up: the EXIT trap runs on these exits.
trap 'exit 130' INT
trap 'exit 143' TERM

printf 'minikube-demo: Falco %s, chart %s; profile %s; alert expected on %s\n' \
    "$FALCO" "$FALCO_CHART_VERSION" "$PROFILE" "$SUBJECT"

# --- cluster ----------------------------------------------------------------------------------
step "minikube profile $PROFILE"
show minikube status -p "$PROFILE" --format '{{.Host}}'
host_state=
if ((!DRY_RUN)); then
    host_state=$(minikube status -p "$PROFILE" --format '{{.Host}}' 2>/dev/null || true)
fi
if [[ $host_state == Running ]]; then
    printf 'reusing the running profile %s\n' "$PROFILE"
else
    check_minikube_kernel
    # Only a profile that was not there at all is the demo's to delete. minikube's answer for
    # a missing one is a message, not a state, so the known states are what count.
    case $host_state in
        Stopped | Paused | Saved | Error | Starting) CREATED_PROFILE=0 ;;
        *) CREATED_PROFILE=1 ;;
    esac
    run minikube start -p "$PROFILE" --driver="$DRIVER" \
        --cpus="${MINIKUBE_CPUS:-2}" --memory="${MINIKUBE_MEMORY:-4096}"
fi

step "gateway image, built inside minikube"
run minikube -p "$PROFILE" image build -t "$IMAGE_REPOSITORY:$IMAGE_TAG" "$ROOT"

step "chart repositories"
run helm repo add falcosecurity https://falcosecurity.github.io/charts --force-update
run helm repo add nats https://nats-io.github.io/k8s/helm/charts/ --force-update
run helm repo update falcosecurity nats

# NATS first, then the gateway (Falco's http_output needs its Service), then Falco.
step "NATS with JetStream"
run "${HELM[@]}" upgrade --install nats nats/nats --namespace nats --create-namespace \
    --version "$NATS_CHART_VERSION" --values "$NATS_VALUES" --wait --timeout 10m

step "falco-nats-gateway"
run "${HELM[@]}" upgrade --install falco-nats-gateway "$CHART" --namespace falco --create-namespace \
    --values "$GATEWAY_VALUES" --set image.repository="$IMAGE_REPOSITORY" \
    --set image.tag="$IMAGE_TAG" --set image.pullPolicy=Never --wait --timeout 5m

step "Falco $FALCO"
run "${HELM[@]}" upgrade --install falco falcosecurity/falco --namespace falco --create-namespace \
    --version "$FALCO_CHART_VERSION" --values "$FALCO_VALUES" --wait --timeout 15m

step "rollouts"
run "${KUBECTL[@]}" -n nats rollout status statefulset/nats --timeout=5m
run "${KUBECTL[@]}" -n nats rollout status deployment/nats-box --timeout=5m
run "${KUBECTL[@]}" -n falco rollout status "$GATEWAY_WORKLOAD" --timeout=5m
run "${KUBECTL[@]}" -n falco rollout status daemonset/falco --timeout=10m

step "gateway connected to NATS (GET /healthz)"
retry 120 "the gateway's /healthz" '"status": "ok"' "${KUBECTL[@]}" -n falco exec "$GATEWAY_WORKLOAD" -- \
    python -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:2801/healthz', timeout=5).read().decode())"
if [[ $FALCO == 0.43 ]]; then
    step "gateway attached to Falco's gRPC socket"
    retry 300 "the gateway's gRPC link to Falco" 'msg="falco-grpc connected"' \
        "${KUBECTL[@]}" -n falco logs "$GATEWAY_WORKLOAD" --tail=-1
fi

# --- the trigger and the alert ----------------------------------------------------------------
step "subscriber on $SUBJECT (nats-box), started before the trigger"
sub_cmd=("${KUBECTL[@]}" -n nats exec deploy/nats-box -- timeout "$ALERT_TIMEOUT" nats sub "$SUBJECT" --count=1)
printf '+ %s &\n' "$(command_line "${sub_cmd[@]}")"
if ((!DRY_RUN)); then
    SUB_OUT=$(mktemp)
    "${sub_cmd[@]}" >"$SUB_OUT" 2>&1 &
    SUB_PID=$!
    # `nats sub` says so once it is subscribing; an alert published before that would be missed.
    deadline=$((SECONDS + 60))
    until grep -q 'Subscribing on' "$SUB_OUT"; do
        # Whether it was still running is asked before the output is read again: a subscriber
        # that subscribed and already ended has written everything by then.
        alive=1
        kill -0 "$SUB_PID" 2>/dev/null || alive=0
        grep -q 'Subscribing on' "$SUB_OUT" && break
        if ((!alive || SECONDS >= deadline)); then
            printf 'minikube-demo: the subscriber did not start:\n' >&2
            cat "$SUB_OUT" >&2
            exit 1
        fi
        sleep 0.2
    done
    # The line comes just before the subscription reaches the server.
    sleep 1
fi

step "a shell in an nginx pod (the seed's trigger)"
run "${KUBECTL[@]}" apply -f "$TRIGGER_MANIFEST"
run "${KUBECTL[@]}" -n "$DEMO_NAMESPACE" wait --for=condition=Ready pod/nginx --timeout=3m
# shellcheck disable=SC2016 # $(hostname) is for the shell in the pod, not this one
with_tty "${KUBECTL[@]}" -n "$DEMO_NAMESPACE" exec -it nginx -- /bin/bash -c 'echo "a shell in $(hostname)"'

step "waiting up to ${ALERT_TIMEOUT}s for \"$RULE\" on $SUBJECT"
if ((DRY_RUN)); then
    printf 'dry run: nothing was run\n'
    exit 0
fi
# `nats sub` ends by itself (one message, or busybox timeout in nats-box); the local deadline
# covers a kubectl exec that loses its connection and would never return.
deadline=$((SECONDS + ALERT_TIMEOUT + 30))
while kill -0 "$SUB_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
kill "$SUB_PID" 2>/dev/null || true
wait "$SUB_PID" 2>/dev/null || true
SUB_PID=
if ! grep -qF "Received on \"$SUBJECT\"" "$SUB_OUT" || ! grep -qF "\"rule\":\"$RULE\"" "$SUB_OUT"; then
    printf '\nminikube-demo: FAILED: no "%s" alert on %s within %s s. The subscriber said:\n' \
        "$RULE" "$SUBJECT" "$ALERT_TIMEOUT" >&2
    cat "$SUB_OUT" >&2
    run "${KUBECTL[@]}" -n falco logs "$GATEWAY_WORKLOAD" --tail=40 >&2 || true
    run "${KUBECTL[@]}" -n falco logs daemonset/falco --tail=40 >&2 || true
    exit 1
fi

printf '\n'
cat "$SUB_OUT"
path=$(sed -n 's/^Falco-Gateway-Path: *//p' "$SUB_OUT" | tr -d '\r')
path=${path%%$'\n'*}
case $path in
    grpc) how="Falco's gRPC outputs API (unix socket /run/falco/falco.sock)" ;;
    http) how="Falco's http_output (POST to the gateway's Service)" ;;
    *) how="an unknown path (no Falco-Gateway-Path header)" ;;
esac
printf 'minikube-demo: OK: "%s" arrived on %s, delivered by %s.\n' "$RULE" "$SUBJECT" "$how"
if [[ $FALCO == 0.43 ]]; then
    printf 'minikube-demo: Falco sent it both ways; the gateway kept the first copy (Falco-Gateway-Path: %s).\n' "$path"
fi
