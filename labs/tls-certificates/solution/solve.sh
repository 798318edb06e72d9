# Reference solution: the openssl sequence the notebook teaches, one key pair at a time.

# 1. The CA: a key, a request for CN={{ ca_cn }}, and a certificate the CA signs with its own key.
openssl genrsa -out ca.key 2048
openssl req -new -key ca.key -subj "/CN={{ ca_cn }}" -out ca.csr
openssl x509 -req -in ca.csr -signkey ca.key -days 3650 -out ca.crt

# 2. The admin client: the group goes in O; no spaces anywhere in the subject.
openssl genrsa -out admin.key 2048
openssl req -new -key admin.key -subj "/CN={{ admin_cn }}/O={{ admin_group }}" -out admin.csr
openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -out admin.crt

# 3. The API server: its names live in subjectAltName, written in an openssl config file.
cat > openssl.cnf <<'CNF'
[req]
req_extensions = v3_req
distinguished_name = req_distinguished_name
[req_distinguished_name]
[v3_req]
basicConstraints = CA:FALSE
keyUsage = nonRepudiation, digitalSignature, keyEncipherment
subjectAltName = @alt_names
[alt_names]
DNS.1 = kubernetes
DNS.2 = kubernetes.default
DNS.3 = kubernetes.default.svc
DNS.4 = kubernetes.default.svc.cluster.local
IP.1 = {{ service_ip }}
IP.2 = {{ node_ip }}
CNF
openssl genrsa -out apiserver.key 2048
openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -config openssl.cnf -out apiserver.csr
# x509 -req does not copy the request's extensions: name them again with -extfile/-extensions.
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
  -extensions v3_req -extfile openssl.cnf -out apiserver.crt
