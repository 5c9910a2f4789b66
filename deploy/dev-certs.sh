#!/bin/sh
# dev-certs.sh DIR makes, with openssl, a throw-away CA and the certificates the dev
# overlay mounts: one per service (named for the service, server and client use), the
# gateway's internal client certificate ("gateway"), its public one (for localhost), and
# an operator's client certificate for `umbra admin`. It writes them into DIR and
# prints the kubectl commands that load them as Secrets. Production uses cert-manager
# instead (deploy/k8s/overlays/production/certificates.yaml).
set -eu
dir=${1:?usage: dev-certs.sh DIR}
ns=${NAMESPACE:-umbra}
mkdir -p "$dir"
cd "$dir"
umask 077

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj "/CN=umbra-dev-ca" -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# issue NAME EXTENDED_KEY_USAGE SUBJECT_ALT_NAMES
issue() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=$1" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' "$2" "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm "$1.csr" "$1.ext"
}
for s in identity card backup group messaging; do
  issue "$s" serverAuth,clientAuth "DNS:$s,DNS:$s.$ns.svc,DNS:$s.$ns.svc.cluster.local,DNS:localhost"
done
issue gateway clientAuth "DNS:gateway"
issue gateway-public serverAuth "DNS:localhost,DNS:gateway,DNS:gateway.$ns.svc,IP:127.0.0.1"
issue operator clientAuth "DNS:operator"
rm -f ca.srl

echo "# Certificates in $(pwd). Load them:"
for s in identity card backup group messaging gateway gateway-public; do
  echo "kubectl -n $ns create secret generic umbra-$s-tls --from-file=tls.crt=$(pwd)/$s.crt --from-file=tls.key=$(pwd)/$s.key --from-file=ca.crt=$(pwd)/ca.crt"
done
