# Put back the certificates and kubeconfigs setup kept (ckalab's originals, before it made two of
# them close to expiry), whatever the learner renewed since. Idempotent: nothing kept, nothing to do.
etc=$(dirname "$CKALAB_PKI_DIR")
keep=$(dirname "$(dirname "$etc")")/cert-renewal.orig
[ -d "$keep" ] || exit 0
cp -a "$keep/pki/." "$CKALAB_PKI_DIR/"
for conf in "$keep"/*.conf; do
  [ -e "$conf" ] && cp -a "$conf" "$etc/"
done
rm -rf "$keep"
echo "ckalab's original certificates are back in place."
