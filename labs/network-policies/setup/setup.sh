# The lab's pods. They are made here rather than listed under setup.manifests so that
# `ckalab reset` keeps them (it only has to remove the learner's policy; on kind the pods keep
# their IPs and pulled images), and so that a pod still terminating from an earlier run, or one
# with an outdated spec (pod specs are immutable), is replaced instead of breaking the apply.
# One `kubectl get` answers everything when the pods are already as they should be.
#
# They run agnhost so that, where the CNI enforces policies (kind), the grader can open real
# connections between them with `agnhost connect`; on the local backend kwok only pretends to
# run them, which is all the policy semantics need.
lab="ckalab.io/lab=$CKALAB_LAB"

declare -A live
while IFS='|' read -r key spec role gone ready; do
  [ -n "$key" ] && live[$key]="$spec|$role|$gone|$ready"
done < <(kubectl get pods -A -l "$lab" -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}|{.metadata.annotations.ckalab\.io/spec}|{.metadata.labels.role}|{.metadata.deletionTimestamp}|{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')

create=""
declare -A pending  # namespace -> the pods of this variant to wait for (by name: another variant's
                 # pods, still terminating on real nodes, carry the same lab label)
pod() {  # pod NAMESPACE NAME ROLE PORT-NAME PORT
  local ns=$1 name=$2 role=$3 pname=$4 port=$5
  local want="agnhost-2.53-$pname-$port"  # what varies in the spec, to compare with the live pod
  local have="${live[$ns/$name]-}"
  unset "live[$ns/$name]"
  if [ "${have%%|*}" = "$want" ] && [[ "$have" == *"||"* ]]; then  # ours and not terminating
    [ "$have" = "$want|$role||True" ] && return
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
