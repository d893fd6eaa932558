#!/usr/bin/env bash
# The Ray head of the RayService, and beside it the consumers' scaling controller.
#
# `ragstream consume` is a Ray driver that owns the consumer actors (an actor dies with its
# owner), so it must run on a node of the cluster, and the head is the one node that lives as
# long as the cluster. KubeRay starts this script instead of its own command (the RayService's
# `ray.io/overwrite-container-cmd` annotation) and hands its generated `ray start --head ...
# --block` over in KUBERAY_GEN_RAY_START_CMD.
#
# A controller that exits is started again here rather than taking the container down with it:
# a head restart would also restart Serve's controller and this node's proxy. When the head's
# Ray stops, the script exits and Kubernetes restarts the pod. SIGTERM stops the controller
# first, so that it finishes and commits the batches in flight, then Ray.
set -u
ulimit -n 65536

$KUBERAY_GEN_RAY_START_CMD &
ray_head=$!

stopping=0
controller=
stop() {
  stopping=1
  if [ -n "$controller" ]; then kill -TERM "$controller" 2>/dev/null; fi
}
trap stop TERM INT

# The controller connects once the head's GCS answers.
until ray health-check --address 127.0.0.1:6379 >/dev/null 2>&1; do
  kill -0 "$ray_head" 2>/dev/null || exit 1
  [ "$stopping" = 1 ] && exit 0
  sleep 1
done

while [ "$stopping" = 0 ] && kill -0 "$ray_head" 2>/dev/null; do
  RAY_ADDRESS=127.0.0.1:6379 ragstream consume &
  controller=$!
  wait "$controller"
  status=$?
  if [ "$stopping" = 1 ]; then
    # `wait` returned for the trapped signal: now wait for the controller's own shutdown.
    wait "$controller"
    break
  fi
  echo "ray-head.sh: ragstream consume exited with status $status; starting it again in 5 s" >&2
  sleep 5
done

ray stop >/dev/null 2>&1
wait "$ray_head"
# 0 when asked to stop; 1 when the head's Ray went away by itself, so that the pod restarts.
[ "$stopping" = 1 ]
