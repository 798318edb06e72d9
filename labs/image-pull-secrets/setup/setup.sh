# Runs after setup/deployment.yaml is applied.
# On real nodes the registry is real: the image is published for this login only, so the pods
# sit in ImagePullBackOff until they pull with the right credentials. Elsewhere nothing to do.
ckalab private-image "{{ server }}/{{ repository }}" --user "{{ username }}" --password "{{ password }}" --if-offered >/dev/null
ns="{{ namespace }}" dep="{{ deployment }}" secret="{{ secret }}"

pods_with_secret() {  # names of the Deployment's pods, not being deleted, that list the secret
  kubectl get pods -n "$ns" -l "app=$dep" -o jsonpath='{range .items[*]}{.metadata.name}|{.metadata.deletionTimestamp}|{.spec.imagePullSecrets[*].name}{"\n"}{end}' |
    awk -F'|' -v s="$secret" '$2 == "" { n = split($3, a, " "); for (i = 1; i <= n; i++) if (a[i] == s) print $1 }'
}

# One correct answer attaches the secret to the namespace's default ServiceAccount. After
# `ckalab reset` the Secret is gone but that reference would remain, and every new pod of the
# Deployment would get it copied in: the "fresh" lab would look half solved. So while the Secret
# does not exist, a reference to exactly its name is taken out of the default ServiceAccount
# (JSON patch with a test, so nothing else in the account is touched), and pods that were given
# it are replaced. With the Secret present (the learner's work in progress), nothing is changed.
stale=""
if ! kubectl get secret "$secret" -n "$ns" >/dev/null 2>&1; then
  names=$(kubectl get serviceaccount default -n "$ns" -o jsonpath='{range .imagePullSecrets[*]}{.name}{"\n"}{end}' 2>/dev/null || true)
  # Highest index first, so removing one does not shift the next.
  for i in $(printf '%s\n' "$names" | grep -nxF -- "$secret" | cut -d: -f1 | sort -rn); do
    stale=1
    kubectl patch serviceaccount default -n "$ns" --type=json -p \
      "[{\"op\":\"test\",\"path\":\"/imagePullSecrets/$((i - 1))/name\",\"value\":\"$secret\"},{\"op\":\"remove\",\"path\":\"/imagePullSecrets/$((i - 1))\"}]" >/dev/null
  done
fi

# Wait for what happens on every backend: the Deployment has created its pods. Whether their
# containers start is up to the cluster; without the pull secret they never do where images are
# really pulled, so waiting for a rollout or for Running would never end there.
kubectl wait deployment "$dep" -n "$ns" --for=jsonpath='{.status.replicas}'=2 --timeout=120s >/dev/null
if [ -n "$stale" ]; then
  # Admission reads ServiceAccounts from a cache, so a pod created just after the patch may
  # still get the old list: replace such pods until none is left (bounded).
  for _ in $(seq 60); do
    old=$(pods_with_secret)
    [ -z "$old" ] && break
    kubectl delete pod -n "$ns" $old --ignore-not-found --wait=false >/dev/null
    sleep 1
  done
  [ -z "$(pods_with_secret)" ] || { echo "pods of $dep still carry $secret" >&2; exit 1; }
  kubectl wait deployment "$dep" -n "$ns" --for=jsonpath='{.status.replicas}'=2 --timeout=120s >/dev/null
fi
