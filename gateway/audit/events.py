"""The product's one audit vocabulary.

Every audited action of every component is one of these values; nothing else is accepted by the audit
log. Names read `<component>.<object>.<what happened>`. Outcome (done or refused, and why) goes in the
record's response, so a refusal is the same event with `{"result": "refused", "reason": ...}`.
"""

from __future__ import annotations

from enum import StrEnum


class AuditEvent(StrEnum):
    # Node lifecycle
    NODE_INITIALISED = "admin.node.initialised"
    NODE_STARTED = "node.started"
    NODE_STOPPED = "node.stopped"
    DEMO_INITIALISED = "admin.demo.initialised"

    # Mailboxes and accounts
    MAILBOX_CREATED = "admin.mailbox.created"
    MAILBOX_LISTED = "admin.mailbox.listed"
    MAILBOX_SHOWN = "admin.mailbox.shown"
    MAILBOX_DISABLED = "admin.mailbox.disabled"
    MAILBOX_ENABLED = "admin.mailbox.enabled"
    MAILBOX_DELETED = "admin.mailbox.deleted"
    RETENTION_RUN = "admin.retention.run"
    RETENTION_WARNED = "retention.mailbox.warned"  # no login for long: its owner warned by a notice in it
    RETENTION_DELETED = "retention.mailbox.deleted"  # still no login after the notice: deleted with its messages
    MAILBOX_PASSWORD_SET = "admin.mailbox.password_set"  # noqa: S105 (an event name)
    MAILBOX_DELEGATED = "admin.mailbox.delegated"
    MAILBOX_UNDELEGATED = "admin.mailbox.undelegated"
    MAILBOX_TOTP_ENROLLED = "admin.mailbox.totp_enrolled"
    MAILBOX_SMIME_FORM_SET = "admin.mailbox.smime_form_set"
    MAILBOX_UNLOCKED = "admin.mailbox.unlocked"  # lock-out counters deleted (which ones, never passwords)

    # patients (domain brief §6)
    PATIENT_CREATED = "admin.patient.created"
    PATIENT_SHOWN = "admin.patient.shown"
    PATIENT_LISTED = "admin.patient.listed"
    PATIENT_DISABLED = "admin.patient.disabled"
    PATIENT_ENABLED = "admin.patient.enabled"
    PATIENT_OPPOSED = "admin.patient.opposed"
    PATIENT_UNOPPOSED = "admin.patient.unopposed"
    PATIENT_ACTIVATION_RESET = "admin.patient.activation_reset"
    PATIENT_REFUSED = "patient.refused"  # an exchange rule refused a message (the rule, never content)
    PATIENT_CONVERSATION_CLOSED = "patient.conversation.closed"

    # patient web inbox
    WEB_LOGIN_SUCCEEDED = "web.login.succeeded"
    WEB_LOGIN_FAILED = "web.login.failed"
    WEB_LOGIN_LOCKED = "web.login.locked"
    WEB_ENROLLED = "web.enrolled"
    WEB_LOGOUT = "web.logout"
    WEB_REFUSED = "web.refused"  # CSRF, expired session, bad input
    WEB_TLS_REFUSED = "web.tls.refused"  # a failed handshake on the HTTPS listener
    WEB_MESSAGE_OPENED = "web.message.opened"
    WEB_ATTACHMENT_DOWNLOADED = "web.attachment.downloaded"
    WEB_REPLY_SENT = "web.reply.sent"

    # Professional directory
    DIRECTORY_IMPORTED = "admin.directory.imported"
    DIRECTORY_EXPORTED = "admin.directory.exported"
    DIRECTORY_SEARCHED = "admin.directory.searched"
    DIRECTORY_SHOWN = "admin.directory.shown"

    # Trust list
    TRUST_DOMAIN_ADDED = "admin.trust.domain_added"
    TRUST_DOMAIN_REMOVED = "admin.trust.domain_removed"
    TRUST_LISTED = "admin.trust.listed"
    OIDC_CHECKED = "admin.oidc.checked"  # the provider's keys fetched, a token judged (its facts, never itself)
    TRUST_LIST_IMPORTED = "admin.trust.list_imported"

    # Trust-space PKI
    PKI_INITIALISED = "admin.pki.initialised"
    PKI_ISSUED = "admin.pki.issued"
    PKI_ATTACHED = "admin.pki.attached"
    PKI_REVOKED = "admin.pki.revoked"
    PKI_CRL_PUBLISHED = "admin.pki.crl_published"
    PKI_ROOT_EXPORTED = "admin.pki.root_exported"
    PKI_LISTED = "admin.pki.listed"
    PKI_DNS_PUBLISHED = "admin.pki.dns_published"
    KEK_CREATED = "admin.kek.created"  # a new key file written (its id, never the key)
    KEK_REWRAPPED = "admin.kek.rewrapped"  # items sealed anew under the current key (counts, key ids)

    # Listeners behind a load balancer (SMTP and IMAP)
    PROXY_REFUSED = "proxy.refused"  # a load balancer's connection without a valid PROXY header (reason)

    # SMTP sessions (submission and relay from peer operators)
    SMTP_AUTH_SUCCEEDED = "smtp.auth.succeeded"
    SMTP_AUTH_FAILED = "smtp.auth.failed"
    SMTP_AUTH_LOCKED = "smtp.auth.locked"
    SMTP_TLS_REFUSED = "smtp.tls.refused"
    SMTP_PEER_REFUSED = "smtp.peer.refused"
    SMTP_SENDER_REFUSED = "smtp.sender.refused"
    SMTP_RECIPIENT_REFUSED = "smtp.recipient.refused"
    SMTP_CONTENT_REFUSED = "smtp.content.refused"
    SMTP_CONNECTION_REFUSED = "smtp.connection.refused"  # too many from one address (once a minute per address)
    SMTP_SESSION_EXPIRED = "smtp.session.expired"  # open for over [smtp] session_lifetime: ended with a 421
    SMTP_MESSAGE_ACCEPTED = "smtp.message.accepted"

    # IMAP sessions of professionals' clients
    IMAP_LOGIN_SUCCEEDED = "imap.login.succeeded"
    IMAP_LOGIN_FAILED = "imap.login.failed"
    IMAP_LOGIN_LOCKED = "imap.login.locked"
    IMAP_TLS_REFUSED = "imap.tls.refused"
    IMAP_CONNECTION_REFUSED = "imap.connection.refused"  # too many from one address (once a minute per address)
    IMAP_COMMAND_REFUSED = "imap.command.refused"  # BAD or NO for a malformed or forbidden command
    IMAP_FETCH_BODY = "imap.fetch.body"  # content returned: folder, UIDs, Message-IDs (never the content)
    IMAP_APPEND = "imap.append"
    IMAP_EXPUNGE = "imap.expunge"
    IMAP_COPY = "imap.copy"
    IMAP_MOVE = "imap.move"
    IMAP_FOLDER_CREATED = "imap.folder.created"
    IMAP_FOLDER_DELETED = "imap.folder.deleted"
    IMAP_FOLDER_RENAMED = "imap.folder.renamed"
    IMAP_LOGOUT = "imap.logout"

    # S/MIME between operators (gateway.smime)
    SMIME_PROTECTED = "smime.protected"  # outbound: signed (signer serial) and encrypted for these recipients
    SMIME_RECIPIENT_REFUSED = "smime.recipient.refused"  # outbound: no usable certificate (discovery step, reason)
    SMIME_VERIFIED = "smime.verified"  # inbound: decrypted, signer valid (serial, binding)
    SMIME_REFUSED = "smime.refused"  # inbound: refused with the reason (5.7.x / 4.7.5)

    # The durable queue and its workers
    QUEUE_DELIVERED = "queue.delivered"
    QUEUE_DUPLICATE = "queue.duplicate"  # a peer's message this mailbox already got: acknowledged, not stored again
    QUEUE_RELAYED = "queue.relayed"
    QUEUE_DEFERRED = "queue.deferred"
    QUEUE_FAILED = "queue.failed"
    QUEUE_DSN_SENT = "queue.dsn.sent"
    # Delivery notifications between operators (gateway.queue.mdn, gateway.queue.notices)
    MDN_QUEUED = "notice.mdn.queued"  # receiving side: our processed/dispatched MDN for a peer's message
    NOTICE_TRACKED = "notice.tracked"  # sending side: a relayed message now waits for its notice
    NOTICE_RECEIVED = "notice.received"  # a peer's notice, given to the sender (verdict per recipient)
    NOTICE_DROPPED = "notice.dropped"  # a peer's notice not given: intermediate, late or a duplicate
    NOTICE_TIMEOUT = "notice.timeout"  # no final notice in time: the sender gets a failure DSN
    QUEUE_LISTED = "admin.queue.listed"
    QUEUE_SHOWN = "admin.queue.shown"
    QUEUE_RETRIED = "admin.queue.retried"
    QUEUE_DELETED = "admin.queue.deleted"
    QUEUE_NOTICES_LISTED = "admin.queue.notices_listed"

    # The audit log itself
    AUDIT_CHECKPOINT_WRITTEN = "audit.checkpoint.written"
    AUDIT_VERIFIED = "admin.audit.verified"
    AUDIT_EXPORTED = "admin.audit.exported"
    AUDIT_SEARCHED = "admin.audit.searched"
    AUDIT_ARCHIVED = "admin.audit.archived"
