"""Why a Kafka client could not connect, in one sentence that names the setting to fix.

aiokafka's clients raise ``KafkaConnectionError("Unable to bootstrap from [...]")`` for every
failure at start-up: an unreachable address, a TLS certificate the client does not trust, a
plaintext port spoken to with TLS, a refused SASL password. :func:`explain_connect_failure`
opens one connection to the first bootstrap address itself (:func:`consumers.compat.open_connection`)
to learn which, and says so without ever showing the password. Used by the worker (its ``/ready``
reason and log), the publisher and the backfill.
"""

from __future__ import annotations

import ssl

from aiokafka.errors import AuthenticationFailedError, SaslAuthenticationFailed

from consumers.compat import open_connection
from consumers.kafka_config import EVENT_HUBS_USERNAME, KafkaConfig

PROBE_TIMEOUT_S = 10.0


def unreachable(kafka: KafkaConfig, exc: BaseException) -> str:
    return (
        f"cannot reach the Kafka broker at {kafka.bootstrap_servers} (IRIS_KAFKA_BOOTSTRAP_SERVERS): "
        f"{type(exc).__name__}."
    )


async def explain_connect_failure(kafka: KafkaConfig, exc: BaseException) -> str:
    """The reason ``exc`` (a client's failed start) happened, naming the ``IRIS_KAFKA_*`` setting."""
    first = kafka.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        return unreachable(kafka, exc)
    try:
        conn = await open_connection(host, int(port), kafka.client_options(), PROBE_TIMEOUT_S)
    except (SaslAuthenticationFailed, AuthenticationFailedError):
        hint = (
            " (for Azure Event Hubs: the namespace's connection string)"
            if kafka.sasl_username == EVENT_HUBS_USERNAME
            else ""
        )
        return (
            f"the Kafka broker at {first} refused the SASL {kafka.sasl_mechanism} login of "
            f"IRIS_KAFKA_SASL_USERNAME={kafka.sasl_username}: check IRIS_KAFKA_SASL_PASSWORD{hint}."
        )
    except ssl.SSLCertVerificationError as err:
        return (
            f"the Kafka broker at {first} presented a certificate this client does not trust "
            f"({err.verify_message}): set IRIS_KAFKA_SSL_CA_FILE to the CA that signed it."
        )
    except ssl.SSLError as err:
        return (
            f"the TLS handshake with the Kafka broker at {first} failed ({err.reason or err}): is "
            f"IRIS_KAFKA_SECURITY_PROTOCOL={kafka.security_protocol} what that port speaks?"
        )
    except Exception:
        return unreachable(kafka, exc)
    conn.close()
    return unreachable(kafka, exc)
