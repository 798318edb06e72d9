# The lab's pods. They are made here rather than listed under setup.manifests so that
# `ckalab reset` keeps them (it only has to remove the learner's policy; on kind the pods keep
# their IPs and pulled images), and so that a pod still terminating from an earlier run, or one
# with an outdated spec (pod specs are immutable), is replaced instead of breaking the apply.
# One `kubectl get` answers everything when the pods are already as they should be.
#
# They run agnhost so that, where pods really run and a policy engine enforces policies (kind,
# the local backend's real nodes), the grader can open real connections between them with
# `agnhost connect`; on kwok nodes they only look Running, which is all the policy semantics need.
lab="ckalab.io/lab=$CKALAB_LAB"

# Nodes where nothing really runs while the cluster has real nodes: ckalab taints them
# ckalab.io/kwok. A pod left on one from the kwok-only mode only looks Running there.
declare -A fake
while IFS='|' read -r node keys; do
  [[ ",$keys" == *",ckalab.io/kwok,"* ]] && fake[$node]=1
done < <(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}|{range .spec.taints[*]}{.key}{","}{end}{"\n"}{end}')

# A pod is "gone" (replaced below) when it is terminating, has finished (a real node's kubelet
# that took over from kwok ends the pods kwok only pretended to run), or sits on a fake node.
declare -A live
while IFS='|' read -r key spec role deleting phase node ready; do
  [ -n "$key" ] || continue
  gone=$deleting
  case "$phase" in Succeeded|Failed|Unknown) gone+=" $phase" ;; esac
  [ -n "${fake[$node]-}" ] && gone+=" on $node"
  live[$key]="$spec|$role|$gone|$ready"
done < <(kubectl get pods -A -l "$lab" -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}|{.metadata.annotations.ckalab\.io/spec}|{.metadata.labels.role}|{.metadata.deletionTimestamp}|{.status.phase}|{.spec.nodeName}|{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')

create=""
# namespace -> the pods of this variant to wait for, by name: another variant's pods, still
# terminating on real nodes, carry the same lab label.
declare -A pending
pod() {  # pod NAMESPACE NAME ROLE PORT-NAME PORT
  local ns=$1 name=$2 role=$3 pname=$4 port=$5
  local want="agnhost-2.53-$pname-$port"  # what varies in the spec, to compare with the live pod
  local have="${live[$ns/$name]-}" hspec hrole hgone hready
  unset "live[$ns/$name]"
  IFS='|' read -r hspec hrole hgone hready <<<"$have"
  if [ -n "$have" ] && [ "$hspec" = "$want" ] && [ -z "$hgone" ]; then  # ours, and it can run
    [ "$hrole" = "$role" ] && [ "$hready" = "True" ] && return
    kubectl label pod "$name" -n "$ns" --overwrite "role=$role" >/dev/null
    pending[$ns]+=" pod/$name"
    return
  fi
  [ -z "$have" ] || kubectl delete pod "$name" -n "$ns" --ignore-not-found --wait=true --timeout=90s >/dev/null
  pending[$ns]+=" pod/$name"
  create+="---
apiVersion: v1
kind: Pod
metadata:
  name: \"$name\"
  namespace: \"$ns\"
  labels: {role: \"$role\", ckalab.io/lab: \"$CKALAB_LAB\"}
  annotations: {ckalab.io/spec: \"$want\"}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: registry.k8s.io/e2e-test-images/agnhost:2.53
      args: [netexec, \"--http-port=$port\"]
      ports: [{name: \"$pname\", containerPort: $port, protocol: TCP}]
"
}

pod "{{ namespace }}" "{{ web_pod }}" "{{ web_role }}" http 80
pod "{{ namespace }}" "{{ api_pod }}" "{{ api_role }}" http 80
pod "{{ namespace }}" "{{ db_pod }}" "{{ db_role }}" "{{ db_port_name }}" "{{ db_port }}"
pod "{{ other_namespace }}" "{{ api_pod }}" "{{ api_role }}" http 80

# What is left in `live` belongs to another variant of this lab (other names): remove it.
for key in "${!live[@]}"; do
  kubectl delete pod "${key#*/}" -n "${key%%/*}" --ignore-not-found --wait=false >/dev/null
done

if [ -n "$create" ]; then
  # --force-conflicts: a pod the learner relabelled and unlabelled is still ours to restore.
  kubectl apply --server-side --force-conflicts --field-manager=ckalab -f - >/dev/null <<<"$create"
fi
# Ready pods have their IPs, so `kubectl get pods -o wide` shows everything at once.
for ns in "${!pending[@]}"; do
  # shellcheck disable=SC2086  # the names are words
  kubectl wait --for=condition=Ready -n "$ns" ${pending[$ns]} --timeout=180s >/dev/null
done
