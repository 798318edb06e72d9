# Reference solution. Pods are immutable, so the two existing ones are deleted and recreated.
kubectl delete pod "{{ web_pod }}" "{{ multi_pod }}" "{{ cap_pod }}" -n "{{ namespace }}" --ignore-not-found --now
kubectl apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: "{{ web_pod }}"
  namespace: "{{ namespace }}"
  labels: {ckalab.io/lab: "$CKALAB_LAB"}
spec:
  securityContext:
    runAsUser: {{ web_uid }}
  containers:
    - name: "{{ web_pod }}"
      image: ubuntu
      command: [sleep, "3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: "{{ multi_pod }}"
  namespace: "{{ namespace }}"
  labels: {ckalab.io/lab: "$CKALAB_LAB"}
spec:
  securityContext:
    runAsUser: {{ pod_uid }}
  containers:
    - name: "{{ web_container }}"
      image: ubuntu
      command: [sleep, "3600"]
      securityContext:
        runAsUser: {{ container_uid }}
    - name: "{{ sidecar_container }}"
      image: ubuntu
      command: [sleep, "3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: "{{ cap_pod }}"
  namespace: "{{ namespace }}"
  labels: {ckalab.io/lab: "$CKALAB_LAB"}
spec:
  containers:
    - name: "{{ cap_pod }}"
      image: ubuntu
      command: [sleep, "4800"]
      securityContext:
        capabilities:
          add: ["SYS_TIME", "NET_ADMIN"]
YAML
# Where containers really run they start moments later: wait until all three are Ready.
kubectl wait --for=condition=Ready pod/"{{ web_pod }}" pod/"{{ multi_pod }}" pod/"{{ cap_pod }}" \
  -n "{{ namespace }}" --timeout=60s
