# Reference solution for kubeconfig: every part written with kubectl config, certificates embedded.
user="{{ user }}"
kc="$user.kubeconfig"
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
kubectl config --kubeconfig="$kc" set-cluster "{{ cluster }}" --server="$server" \
  --certificate-authority=ca.crt --embed-certs=true
kubectl config --kubeconfig="$kc" set-credentials "$user" \
  --client-certificate="$user.crt" --client-key="$user.key" --embed-certs=true
kubectl config --kubeconfig="$kc" set-context "$user@{{ cluster }}" \
  --cluster="{{ cluster }}" --user="$user" --namespace="{{ namespace }}"
kubectl config --kubeconfig="$kc" use-context "$user@{{ cluster }}"
