#!/usr/bin/env bash
# Regenerate etcd's v3 API messages (etcd v3.4: etcdserverpb/rpc.proto,
# mvccpb/kv.proto, authpb/auth.proto) for sailplane.store.
#
#   sailplane/store/etcdpb/regenerate.sh /path/to/etcd-checkout-at-v3.4.x
#
# The gogoproto and google.api (grpc-gateway) annotations are stripped and the
# imports renamed into this package; only messages are generated (*_pb2.py and
# typed *_pb2.pyi): sailplane calls the RPCs by method path (etcdclient.py),
# so no grpc stubs and no grpcio version check. grpcio-tools is a dev-time
# tool here, never a runtime dependency. Pin 1.63.0: it emits protobuf 5.26.1
# gencode, which loads with every protobuf our pyproject allows (>=5.26.1).
#   python3 -m venv /tmp/gen && /tmp/gen/bin/pip install grpcio-tools==1.63.0
#   PYTHON=/tmp/gen/bin/python sailplane/store/etcdpb/regenerate.sh ~/etcd
set -euo pipefail
ETCD=${1:?usage: regenerate.sh ETCD_SOURCE_DIR}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
OUT="$WORK/sailplane/store/etcdpb"
mkdir -p "$OUT"
strip() {
    # Drop gogoproto/google.api imports and options, rename our imports.
    "$PYTHON" - "$1" "$2" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r'import "(gogoproto/gogo|google/api/annotations)\.proto";\n', "", text)
text = re.sub(r"option \(gogoproto\.[a-z_]+\) = [a-z]+;\n", "", text)
while (start := text.find("option (google.api.http) = {")) >= 0:
    depth, end = 0, text.index("{", start)
    while True:  # the option's braces nest (additional_bindings { ... })
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        end += 1
        if depth == 0:
            break
    text = text[:start].rstrip(" ") + text[end:].lstrip(";").lstrip("\n")
text = re.sub(r"\s*\[\s*\(gogoproto\.[^\]]*\]", "", text)
text = text.replace('"etcd/mvcc/mvccpb/kv.proto"', '"sailplane/store/etcdpb/kv.proto"')
text = text.replace('"etcd/auth/authpb/auth.proto"', '"sailplane/store/etcdpb/auth.proto"')
assert "gogoproto" not in text and "google.api" not in text, "unstripped annotations"
open(sys.argv[2], "w").write(text)
PY
}
strip "$ETCD/etcdserver/etcdserverpb/rpc.proto" "$OUT/rpc.proto"
strip "$ETCD/mvcc/mvccpb/kv.proto" "$OUT/kv.proto"
strip "$ETCD/auth/authpb/auth.proto" "$OUT/auth.proto"
"$PYTHON" -m grpc_tools.protoc -I "$WORK" --python_out="$WORK" --pyi_out="$WORK" \
    "$OUT/rpc.proto" "$OUT/kv.proto" "$OUT/auth.proto"
for name in rpc kv auth; do
    cp "$OUT/${name}_pb2.py" "$OUT/${name}_pb2.pyi" "$HERE/"
done
echo "regenerated into $HERE"
