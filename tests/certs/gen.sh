#!/bin/sh
# Regenerate the test certificates (see README.md). Run from tests/certs/.
set -e
DAYS=36500
# Test CA
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days $DAYS \
  -subj "/CN=openai2 test CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign"
# server.pem: localhost + 127.0.0.1, signed by the test CA
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days $DAYS -sha256 -extfile server.ext
# wrong-host.pem: other.invalid only, same CA (hostname-mismatch tests)
openssl req -newkey rsa:2048 -nodes -keyout wrong-host.key -out wrong-host.csr -subj "/CN=other.invalid"
printf 'subjectAltName=DNS:other.invalid\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > wrong-host.ext
openssl x509 -req -in wrong-host.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out wrong-host.pem -days $DAYS -sha256 -extfile wrong-host.ext
# other-ca.pem and a localhost server certificate signed by it (unknown-CA tests)
openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days $DAYS \
  -subj "/CN=openai2 other test CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey rsa:2048 -nodes -keyout other-server.key -out other-server.csr -subj "/CN=localhost"
openssl x509 -req -in other-server.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial -out other-server.pem -days $DAYS -sha256 -extfile server.ext
rm -f server.csr wrong-host.csr other-server.csr server.ext wrong-host.ext ca.srl other-ca.srl
