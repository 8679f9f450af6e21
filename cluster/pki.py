"""The cluster's certificates and kubeconfigs, made with ``cryptography`` at every ``up``.

One CA signs the API server's serving certificate, the kubelet's, and a client certificate
per component (its user name and groups are what RBAC sees: kubeadm's naming). A second
CA, the front proxy's, lets the aggregation layer reach KEDA's metrics API server. The
service-account key pair signs the pods' tokens.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster import settings

VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Client:
    """A client certificate: its file stem, user name (CN) and groups (O)."""

    stem: str
    user: str
    groups: tuple[str, ...] = ()


# Host components and their identities. system:masters is the control plane's own group
# (the API server calling kubelets, the admin); the others get the roles Kubernetes binds
# to these names by default, or the ones addons.py creates.
CLIENTS = (
    Client("admin", "localkube-admin", ("system:masters",)),
    Client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
    Client("controller-manager", "system:kube-controller-manager"),
    Client("scheduler", "system:kube-scheduler"),
    Client("kubelet", f"system:node:{settings.NODE_NAME}", ("system:nodes",)),
    Client("proxy", "system:kube-proxy"),
    Client("coredns", "localkube:coredns"),
    Client("provisioner", "localkube:provisioner"),
)
KUBECONFIG_CLIENTS = ("admin", "controller-manager", "scheduler", "kubelet", "proxy", "coredns",
                      "provisioner")  # fmt: skip


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class Authority:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str) -> Authority:
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            .sign(key, hashes.SHA256())
        )
        return cls(name, key, cert)

    def issue(
        self,
        common_name: str,
        groups: tuple[str, ...] = (),
        *,
        server: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = _key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if dns or ips:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


def write_pair(
    directory: Path,
    stem: str,
    pair: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
) -> None:
    _write_key(directory / f"{stem}.key", pair[0])
    _write_cert(directory / f"{stem}.crt", pair[1])


def kubeconfig(path: Path, pki: Path, client: str, server: str) -> None:
    """A kubeconfig for ``client``'s certificate against ``server`` (absolute file paths)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "localkube",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": client,
                "user": {
                    "client-certificate": str(pki / f"{client}.crt"),
                    "client-key": str(pki / f"{client}.key"),
                },
            }
        ],
        "contexts": [{"name": "localkube", "context": {"cluster": "localkube", "user": client}}],
        "current-context": "localkube",
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)


def create(paths: settings.Paths) -> None:
    """Every certificate, key and kubeconfig of the cluster, fresh."""
    pki = paths.pki
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    ca = Authority.create("localkube-ca")
    _write_cert(pki / "ca.crt", ca.cert)
    _write_key(pki / "ca.key", ca.key)
    domain = settings.CLUSTER_DOMAIN
    write_pair(
        pki,
        "apiserver",
        ca.issue(
            "kube-apiserver",
            server=True,
            dns=("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 f"kubernetes.default.svc.{domain}", "localhost"),
            ips=(settings.NODE_IP, settings.KUBERNETES_SERVICE_IP, "127.0.0.1"),
        ),
    )  # fmt: skip
    write_pair(
        pki,
        "kubelet-serving",
        ca.issue(
            f"system:node:{settings.NODE_NAME}",
            ("system:nodes",),
            server=True,
            dns=(settings.NODE_NAME,),
            ips=(settings.NODE_IP,),
        ),
    )
    for client in CLIENTS:
        write_pair(pki, client.stem, ca.issue(client.user, client.groups))
    front = Authority.create("localkube-front-proxy-ca")
    _write_cert(pki / "front-proxy-ca.crt", front.cert)
    write_pair(pki, "front-proxy-client", front.issue("front-proxy-client"))
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki / "sa.key", sa)
    (pki / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    server = f"https://{settings.NODE_IP}:{settings.APISERVER_PORT}"
    paths.config.mkdir(parents=True, exist_ok=True)
    for stem in KUBECONFIG_CLIENTS:
        target = paths.admin_kubeconfig if stem == "admin" else paths.config / f"{stem}.kubeconfig"
        kubeconfig(target, pki, stem, server)
