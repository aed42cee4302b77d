#!/usr/bin/env bash
# Makes the development/test PKI in this folder: a CA and a certificate for localhost,
# 127.0.0.1 and ::1 signed by it. For tests and local trials only; never use these keys in
# production (crmgate generates its own self-signed certificate per data dir, or takes yours).
set -euo pipefail
cd "$(dirname "$0")"
days=3650
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -keyout ca.key -out ca.pem -subj "/CN=crmgate test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout localhost.key -out localhost.csr -subj "/CN=localhost"
openssl x509 -req -in localhost.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
  -out localhost.pem -extfile <(printf '%s\n' \
    "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth")
rm -f localhost.csr ca.srl
# The mailbox mirror's app certificates (Entra ID takes RSA only): one registered on the test
# app, one that is not. Public key and SHA-1 thumbprint come from openssl, so the Graph
# simulator checks crmgate's signatures against values crmgate's code did not derive.
for n in app other; do
  openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=crmgate mirror test ($n)" \
    -keyout "mirror-$n.key" -out "mirror-$n.pem"
  openssl rsa -in "mirror-$n.key" -RSAPublicKey_out -outform DER -out "mirror-$n.pubkey.der"
  openssl x509 -in "mirror-$n.pem" -noout -fingerprint -sha1 | sed 's/.*=//; s/://g' \
    > "mirror-$n.thumbprint"
done
openssl rsa -in mirror-app.key -traditional -out mirror-app.pkcs1.key
echo "made ca.pem, ca.key, localhost.pem, localhost.key, mirror-{app,other}.*"
