# Reference solution: the openssl sequence the notebook teaches, one key pair at a time.

# 1. The CA: a key and a self-signed certificate for CN={{ ca_cn }} that says it is a CA.
#    basicConstraints CA:TRUE (critical) and keyCertSign are what let it sign the others; without
#    them (the version 1 certificate 'openssl x509 -req -signkey' makes) OpenSSL 3.2+ refuses it.
openssl genrsa -out ca.key 2048
openssl req -x509 -new -key ca.key -subj "/CN={{ ca_cn }}" -days 3650 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.crt

# The extensions of the two leaf certificates, used again when the CA signs them:
# openssl x509 -req does not copy a request's extensions.
cat > openssl.cnf <<'CNF'
[req]
distinguished_name = req_distinguished_name
[req_distinguished_name]
[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = @alt_names
[alt_names]
DNS.1 = kubernetes
DNS.2 = kubernetes.default
DNS.3 = kubernetes.default.svc
DNS.4 = kubernetes.default.svc.cluster.local
IP.1 = {{ service_ip }}
IP.2 = {{ node_ip }}
CNF

# 2. The admin client: the group goes in O; no spaces anywhere in the subject.
openssl genrsa -out admin.key 2048
openssl req -new -key admin.key -subj "/CN={{ admin_cn }}/O={{ admin_group }}" -out admin.csr
openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
  -extfile openssl.cnf -extensions v3_client -out admin.crt

# 3. The API server: its names live in subjectAltName, in the v3_server section.
openssl genrsa -out apiserver.key 2048
openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -out apiserver.csr
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
  -extfile openssl.cnf -extensions v3_server -out apiserver.crt
