# Make the API server's serving certificate and one of its client certificates close to expiry:
# each is issued again by its own CA with the same key, names and usages, valid from a year ago
# minus {{ days }} days until {{ days }} days from now (nothing expires during the lab; the clock
# is never touched). ckalab's originals (every file `kubeadm certs renew all` rewrites) are kept
# first, outside what the node sees; the teardown puts them back on start, reset and exam finish.
etc=$(dirname "$CKALAB_PKI_DIR")
if ! grep -qs '^# Written by ckalab for the controlplane node' "$etc/manifests/kube-apiserver.yaml"; then
  echo "This lab needs the control plane as static pods on a real controlplane node: start the" >&2
  echo "cluster with 'ckalab up --nodes real' (as root), then 'ckalab reset cert-renewal'." >&2
  exit 1
fi
keep=$(dirname "$(dirname "$etc")")/cert-renewal.orig
if ! [ -d "$keep" ]; then
  rm -rf "$keep.new"  # half a copy from an interrupted setup
  mkdir -p "$keep.new"
  cp -a "$CKALAB_PKI_DIR" "$keep.new/pki"
  for conf in admin super-admin controller-manager scheduler; do
    [ -e "$etc/$conf.conf" ] && cp -a "$etc/$conf.conf" "$keep.new/"
  done
  mv "$keep.new" "$keep"
fi

serial=$(python - "$CKALAB_PKI_DIR" "{{ days }}" apiserver:ca "{{ also }}" <<'PY'
import datetime as dt
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ckalab import pki

d, days = Path(sys.argv[1]), int(sys.argv[2])
cas = {"apiserver-kubelet-client": "ca", "front-proxy-client": "front-proxy-ca", "apiserver-etcd-client": "etcd/ca"}
now = dt.datetime.now(dt.timezone.utc)
for arg in sys.argv[3:]:
    name, _, ca_name = arg.partition(":")
    ca_name = ca_name or cas[name]
    ca, ca_key = pki.load_cert(d / f"{ca_name}.crt"), pki.load_key(d / f"{ca_name}.key")
    current = pki.load_cert(d / f"{name}.crt")
    builder = (x509.CertificateBuilder().subject_name(current.subject).issuer_name(ca.subject)
               .public_key(current.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=365 - days)).not_valid_after(now + dt.timedelta(days=days)))
    for ext in current.extensions:  # the same names and usages as before
        if isinstance(ext.value, x509.AuthorityKeyIdentifier):
            ext = x509.Extension(ext.oid, ext.critical, x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()))
        builder = builder.add_extension(ext.value, ext.critical)
    cert = builder.sign(ca_key, hashes.SHA256())
    tmp = d / f".{name}.crt.ckalab"
    tmp.write_bytes(pki.cert_pem(cert))
    tmp.replace(d / f"{name}.crt")
    if name == "apiserver":
        serial = format(cert.serial_number, "X")
        print(serial.zfill(len(serial) + len(serial) % 2))  # as openssl prints it: whole bytes
PY
)

# The API server reloads its serving certificate from disk by itself (within seconds): setup waits
# until the near-expiry certificate is what it presents. It is not restarted (a stopped container
# of a static pod is started again with a growing back-off); the client certificate it holds is
# ckalab's original, valid one, which the learner's restart replaces with the renewed file.
port=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}' | sed 's/.*://')
for _ in $(seq 120); do
  served=$(timeout 3 openssl s_client -connect "127.0.0.1:$port" </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null | sed 's/serial=//' || true)
  if [ "$served" = "$serial" ] && kubectl get --raw=/readyz --request-timeout=2s >/dev/null 2>&1; then
    echo "The API server's certificate expires in {{ days }} days; so does {{ also }}."
    exit 0
  fi
  sleep 1
done
echo "The API server does not serve the prepared certificate (serial $serial) after 120 s: ckalab status." >&2
exit 1
