"""E-mail (issue 11): the verification link (service and pages), sending through SES in
batches with retries, the user's switch, the log backend of the embedded default."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from chalicelib.models import utcnow
from tests.support import api_data
from tests.web.helpers import Browser

LINK = re.compile(r"http://lm\.test/account/validate_email\?code=([\w-]+)")


@pytest.fixture
def ses(monkeypatch):
    from moto import mock_aws

    monkeypatch.setenv("LM_EMAIL_BACKEND", "ses")
    monkeypatch.setenv("LM_EMAIL_SENDER", "lifemonitor@lm.test")
    with mock_aws():
        import boto3

        boto3.client("ses", region_name="eu-west-1").verify_email_identity(
            EmailAddress="lifemonitor@lm.test"
        )
        yield


def sent() -> list:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return list(ses_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"].sent_messages)


def is_verified(user_id: int) -> bool:
    from chalicelib.db import session_scope
    from chalicelib.models import User

    with session_scope() as s:
        return s.get(User, user_id).email_verified


def test_verification_through_the_profile(client, user, ses):
    browser = Browser(client)
    browser.login()
    browser.get("/account/profile?currentView=notificationsTab")
    assert "Send verification email" in browser.text()
    r = browser.post("/account/send_verification_email")
    assert r.status_code == 303
    [mail] = sent()
    assert mail.destinations["ToAddresses"] == ["a@example.org"]
    assert "confirm" in mail.subject.lower()
    code = LINK.search(mail.body).group(1)
    # Too soon for another mail.
    browser.get("/account/profile?currentView=notificationsTab")
    browser.post("/account/send_verification_email")
    assert len(sent()) == 1
    # A wrong code verifies nothing (a 400 page), the right one the address.
    r = client.http.get("/account/validate_email?code=nope")
    assert r.status_code == 400 and b"not valid" in r.body
    r = browser.get(f"/account/validate_email?code={code}")
    assert r.status_code == 303
    browser.get("/account/profile?currentView=notificationsTab")
    assert "verified" in browser.text() and "Send verification email" not in browser.text()
    # Used up.
    assert client.http.get(f"/account/validate_email?code={code}").status_code == 400


def test_a_code_verifies_only_the_address_it_was_sent_to(session, user, ses):
    from chalicelib.models import User
    from chalicelib.services import email

    alice = session.query(User).filter_by(username="alice").one()
    email.send_verification(session, alice.id)
    code = LINK.search(sent()[0].body).group(1)
    alice.email = "other@example.org"  # changed before the link was opened
    with pytest.raises(Exception, match="not valid"):
        email.validate(session, code)
    assert alice.email_verified is False


def test_an_expired_code_is_refused(session, user, ses):
    from chalicelib.models import User
    from chalicelib.services import email

    alice = session.query(User).filter_by(username="alice").one()
    email.send_verification(session, alice.id, now=utcnow() - timedelta(days=3))
    code = LINK.search(sent()[0].body).group(1)
    with pytest.raises(Exception, match="expired"):
        email.validate(session, code)


def test_validation_without_a_session_shows_a_page(client, user, ses):
    from chalicelib.db import session_scope
    from chalicelib.models import User
    from chalicelib.services import email

    with session_scope() as s:
        email.send_verification(s, s.query(User).filter_by(username="alice").one().id)
    code = LINK.search(sent()[0].body).group(1)
    r = client.http.get(f"/account/validate_email?code={code}")
    assert r.status_code == 200 and b"is verified" in r.body


def _notify(user_ids: list[int]) -> None:
    from chalicelib.db import session_scope
    from chalicelib.services import notifications

    with session_scope() as s:
        notifications.notify_users(
            s, user_ids, event="BUILD_FAILED", name="TestBuild '1' @ instance 'x' FAILED", data={}
        )


def test_switch_off_and_unverified_get_no_mail(db, ses):
    from chalicelib.services import email

    on = api_data.make_user("on")
    off = api_data.make_user("off")
    unverified = api_data.make_user("unverified")
    from chalicelib.db import session_scope
    from chalicelib.models import User, UserNotification

    with session_scope() as s:
        for actor in (on, off):
            s.get(User, actor.user_id).email_verified = True
        s.get(User, off.user_id).notifications_enabled = False
    _notify([on.user_id, off.user_id, unverified.user_id])
    assert email.send_pending() == {"sent": 1, "failed": 0, "skipped": 2}
    assert [m.destinations["ToAddresses"] for m in sent()] == [["on@example.org"]]
    with session_scope() as s:
        reasons = {r.user_id: r.email_error for r in s.query(UserNotification)}
    assert reasons[off.user_id] == "e-mail notifications are off"
    assert reasons[unverified.user_id] == "the e-mail address is not verified"


def test_failed_sends_are_retried_with_back_off(db, ses, monkeypatch):
    from chalicelib.services import email

    calls = []

    def flaky(mail):
        calls.append(mail.to)
        if len(calls) <= 2:
            raise RuntimeError("throttled")

    monkeypatch.setattr(email, "send", flaky)
    bob = api_data.make_user("bob")
    from chalicelib.db import session_scope
    from chalicelib.models import User

    with session_scope() as s:
        s.get(User, bob.user_id).email_verified = True
    _notify([bob.user_id])
    now = utcnow()
    assert email.send_pending(now)["failed"] == 1
    assert email.send_pending(now)["failed"] == 0  # not due yet: back-off
    assert email.send_pending(now + timedelta(minutes=1, seconds=1))["failed"] == 1
    assert email.send_pending(now + timedelta(minutes=2))["sent"] == 0
    assert email.send_pending(now + timedelta(minutes=4))["sent"] == 1
    assert len(calls) == 3


def test_batches(db, ses):
    from chalicelib.db import session_scope
    from chalicelib.models import User
    from chalicelib.services import email

    bob = api_data.make_user("bob")
    with session_scope() as s:
        s.get(User, bob.user_id).email_verified = True
    for _ in range(5):
        _notify([bob.user_id])
    assert email.send_pending(batch=2)["sent"] == 2
    assert email.send_pending(batch=2)["sent"] == 2
    assert email.send_pending(batch=2)["sent"] == 1
    [mail, *_] = sent()
    assert mail.body  # an HTML part; the text part is given to SES beside it


def test_log_backend_prints_the_mail(db, caplog):
    from chalicelib.services import email

    with caplog.at_level("INFO", logger="chalicelib.services.email"):
        email.send(email.Mail("x@example.org", "Subject here", "the text", "<p>the text</p>"))
    assert "Subject here" in caplog.text and "the text" in caplog.text
