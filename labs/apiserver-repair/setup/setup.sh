# Break the running API server as a careless certificate change does (variant: {{ fault }}) and
# wait until it is down (for expired-cert: until clients refuse it). Only the API server's static pod manifest is edited (and, for
# key-mismatch, a renewed certificate and key are added to the PKI): `ckalab reset` restores
# ckalab's manifest first, so running this again starts from a working control plane.
etc=$(dirname "$CKALAB_PKI_DIR")
manifest=$etc/manifests/kube-apiserver.yaml
if ! grep -qs '^# Written by ckalab for the controlplane node' "$manifest"; then
  echo "This lab needs the control plane as static pods on a real controlplane node: start the" >&2
  echo "cluster with 'ckalab up --nodes real' (as root), then 'ckalab reset apiserver-repair'." >&2
  exit 1
fi
node_pki=/etc/kubernetes/pki  # where the node (and the manifest) sees $CKALAB_PKI_DIR

# set_flag NAME VALUE: the manifest's "- --NAME=..." line says VALUE afterwards. The new file is
# written beside the manifests folder and moved in, so the kubelet never reads half a file.
set_flag() {
  local tmp=$etc/.kube-apiserver.yaml.ckalab-setup
  sed -E "s|^( *- --$1=).*\$|\1$2|" "$manifest" > "$tmp"
  grep -q -- "--$1=$2\$" "$tmp" || { rm -f "$tmp"; echo "no --$1 in $manifest" >&2; exit 1; }
  mv "$tmp" "$manifest"
}

# missing NAME: the fault is a flag naming pki/NAME, which must not exist; a file of that name
# (made in an earlier attempt) is moved aside, never deleted.
missing() {
  if [ -e "$CKALAB_PKI_DIR/$1" ]; then
    mv "$CKALAB_PKI_DIR/$1" "$CKALAB_PKI_DIR/$1.before-reset.$(date +%s)"
    echo "Moved $node_pki/$1 aside (to $1.before-reset.*): this lab's variant needs that name free."
  fi
}

case "{{ fault }}" in
  etcd-certfile)  missing apiserver-etcd-client.pem; set_flag etcd-certfile "$node_pki/apiserver-etcd-client.pem" ;;
  client-ca-file) missing ca.pem; set_flag client-ca-file "$node_pki/ca.pem" ;;
  tls-cert-file)  missing apiserver-new.crt; set_flag tls-cert-file "$node_pki/apiserver-new.crt" ;;
  key-mismatch)
    # A renewed serving certificate (new key, same names, signed by the cluster CA). The
    # change named the new certificate but kept the old key.
    pki=$CKALAB_PKI_DIR
    if ! [ -s "$pki/apiserver-renewed.crt" ] || ! [ -s "$pki/apiserver-renewed.key" ]; then
      sans=$(openssl x509 -in "$pki/apiserver.crt" -noout -ext subjectAltName | tail -n +2 |
             sed 's/^ *//; s/IP Address:/IP:/g; s/, /,/g')
      ext=$(mktemp)
      printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' \
        "$sans" > "$ext"
      (umask 077; openssl genrsa -out "$pki/apiserver-renewed.key" 2048 2>/dev/null)
      openssl req -new -key "$pki/apiserver-renewed.key" -subj "/CN=kube-apiserver" |
        openssl x509 -req -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
          -days 365 -extfile "$ext" -out "$pki/apiserver-renewed.crt" 2>/dev/null
      rm -f "$ext"
    fi
    set_flag tls-cert-file "$node_pki/apiserver-renewed.crt" ;;
  expired-cert)
    # A backup of the serving certificate, put back in place: same names, signed by the
    # cluster CA, but expired yesterday. The API server starts with it; every client refuses it.
    if ! [ -s "$CKALAB_PKI_DIR/apiserver-backup.crt" ] || ! [ -s "$CKALAB_PKI_DIR/apiserver-backup.key" ]; then
      python - "$CKALAB_PKI_DIR" <<'PY'
import datetime as dt
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ckalab import pki

d = Path(sys.argv[1])
ca_key, ca, current = pki.load_key(d / "ca.key"), pki.load_cert(d / "ca.crt"), pki.load_cert(d / "apiserver.crt")
key, now = pki.new_key(), dt.datetime.now(dt.timezone.utc)
builder = (x509.CertificateBuilder().subject_name(current.subject).issuer_name(ca.subject)
           .public_key(key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - dt.timedelta(days=366)).not_valid_after(now - dt.timedelta(days=1)))
for ext in current.extensions:  # the same names and usages as the certificate in use
    builder = builder.add_extension(ext.value, ext.critical)
pki.write_pair(d, "apiserver-backup", key, builder.sign(ca_key, hashes.SHA256()))
PY
    fi
    set_flag tls-cert-file "$node_pki/apiserver-backup.crt"
    set_flag tls-private-key-file "$node_pki/apiserver-backup.key" ;;
esac

# The kubelet notices the change within seconds; the old API server then shuts down (answering
# /readyz with 500 meanwhile) and the new container exits at once, or (expired-cert) serves the
# backup certificate. Setup returns only once that end state is reached, not at the first failed
# /readyz: a check right after setup must see what the learner will find.
port=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}' | sed 's/.*://')
served() { timeout 3 openssl s_client -connect "127.0.0.1:$port" </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 2>/dev/null; }
if [ "{{ fault }}" = expired-cert ]; then
  want=$(openssl x509 -noout -fingerprint -sha256 < "$CKALAB_PKI_DIR/apiserver-backup.crt")
  ready() { [ "$(served)" = "$want" ] && ! kubectl get --raw=/readyz --request-timeout=2s >/dev/null 2>&1; }
else
  # No TLS server behind the port (twice in a row, a second apart: the kubelet may be between
  # two attempts of the failing container).
  ready() { [ -z "$(served)" ] && sleep 1 && [ -z "$(served)" ]; }
fi
for _ in $(seq 90); do
  ready && { echo "kubectl gets no answer it trusts: the lab is ready."; exit 0; }
  sleep 1
done
echo "The API server still answers 90 s after its manifest was changed: is the controlplane node's kubelet running?" >&2
exit 1
