"""infra/cfn/stateful.yaml: lints clean offline and provides what the Chalice stage imports."""

from __future__ import annotations

import re

import pytest

from tests.infra.infra_support import MERGE, STATEFUL, cfn_lint, chalice_config, load_cfn


@pytest.fixture(scope="module")
def stateful() -> dict:
    return load_cfn(STATEFUL)


def resources_of(template: dict, type_: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def test_stateful_template_passes_cfn_lint():
    result = cfn_lint(STATEFUL)
    assert result.returncode == 0, result.stdout + result.stderr


def test_refresh_queue_has_a_dead_letter_queue_and_a_long_enough_visibility(stateful):
    queues = resources_of(stateful, "AWS::SQS::Queue")
    queue = queues["RefreshQueue"]["Properties"]
    assert queue["QueueName"] == {"Fn::Sub": "lifemonitor-refresh-${Stage}"}
    worker_timeout = chalice_config()["lambda_functions"]["worker"]["lambda_timeout"]
    assert queue["VisibilityTimeout"] >= 6 * worker_timeout
    redrive = queue["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == 5
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["RefreshDeadLetterQueue", "Arn"]}
    dlq = queues["RefreshDeadLetterQueue"]["Properties"]
    assert dlq["QueueName"] == {"Fn::Sub": "lifemonitor-refresh-${Stage}-dlq"}
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]


def test_crate_bucket_is_encrypted_private_and_kept(stateful):
    bucket = stateful["Resources"]["CrateBucket"]
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert props["BucketName"]["Fn::Sub"].startswith("lifemonitor-${Stage}-crates-")
    rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert len(props["PublicAccessBlockConfiguration"]) == 4


def test_database_sits_in_two_private_subnets(stateful):
    res = stateful["Resources"]
    db = res["Database"]
    assert db["DeletionPolicy"] == "Snapshot"
    assert db["Properties"]["PubliclyAccessible"] is False
    assert db["Properties"]["StorageEncrypted"] is True
    assert db["Properties"]["Engine"] == "postgres"
    subnets = res["DatabaseSubnetGroup"]["Properties"]["SubnetIds"]
    assert subnets == [{"Ref": "PrivateSubnet1"}, {"Ref": "PrivateSubnet2"}]
    for name in ("PrivateSubnet1", "PrivateSubnet2"):
        assert res[name]["Properties"]["MapPublicIpOnLaunch"] is False
    # The private route table leads out through the NAT, never straight to the IGW.
    assert res["PrivateDefaultRoute"]["Properties"]["NatGatewayId"] == {"Ref": "NatGateway"}
    ingress = res["DatabaseIngressFromLambda"]["Properties"]
    assert ingress["SourceSecurityGroupId"] == {"Ref": "LambdaSecurityGroup"}
    assert (ingress["FromPort"], ingress["ToPort"]) == (5432, 5432)
    # No password in the template: it is generated and resolved from Secrets Manager.
    password = db["Properties"]["MasterUserPassword"]["Fn::Sub"]
    assert password.startswith("{{resolve:secretsmanager:")


def _imports(node) -> set[str]:
    """Every `lifemonitor-${Stage}-X` export name imported anywhere below node."""
    found: set[str] = set()
    if isinstance(node, dict):
        if "Fn::ImportValue" in node:
            found.add(node["Fn::ImportValue"]["Fn::Sub"])
        for value in node.values():
            found |= _imports(value)
    elif isinstance(node, list):
        for value in node:
            found |= _imports(value)
    return found


def test_every_import_of_the_merge_template_is_exported(stateful):
    exports = {
        o["Export"]["Name"]["Fn::Sub"] for o in stateful["Outputs"].values() if "Export" in o
    }
    imported = _imports(load_cfn(MERGE))
    assert imported, "the merge template imports nothing from the stateful stack"
    assert imported <= exports, f"not exported: {sorted(imported - exports)}"
    for name in exports:
        assert re.fullmatch(r"lifemonitor-\$\{Stage\}-[A-Za-z0-9]+", name), name


def test_statement_cache_is_off_behind_rds_proxy(stateful):
    """Named statements pin connections in RDS Proxy: the functions get
    LM_DB_STATEMENT_CACHE=0 exactly when the proxy is on."""
    output = stateful["Outputs"]["DatabaseStatementCache"]
    assert output["Value"] == {"Fn::If": ["WithRdsProxy", "0", "100"]}
    env = load_cfn(MERGE)["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert env["LM_DB_STATEMENT_CACHE"] == {
        "Fn::ImportValue": {"Fn::Sub": "lifemonitor-${Stage}-DatabaseStatementCache"}
    }


def test_rds_proxy_requires_tls_and_uses_the_generated_secret(stateful):
    res = stateful["Resources"]
    proxy = res["DatabaseProxy"]
    assert proxy["Condition"] == "WithRdsProxy"
    props = proxy["Properties"]
    assert props["RequireTLS"] is True and props["EngineFamily"] == "POSTGRESQL"
    assert props["Auth"][0]["SecretArn"] == {"Ref": "DatabaseSecret"}
    target = res["DatabaseProxyTargetGroup"]["Properties"]
    assert target["DBInstanceIdentifiers"] == [{"Ref": "Database"}]
    endpoint = stateful["Outputs"]["DatabaseEndpoint"]["Value"]["Fn::If"]
    assert endpoint[0] == "WithRdsProxy"
    assert endpoint[1] == {"Fn::GetAtt": ["DatabaseProxy", "Endpoint"]}


def test_ses_identity_is_optional_retained_and_exported(stateful):
    identity = stateful["Resources"]["EmailIdentity"]
    assert identity["Type"] == "AWS::SES::EmailIdentity"
    assert identity["Condition"] == "WithSesIdentity"
    assert identity["DeletionPolicy"] == "Retain"
    assert identity["Properties"]["EmailIdentity"] == {"Ref": "SesIdentity"}
    assert stateful["Parameters"]["SesIdentity"]["Default"] == ""
    output = stateful["Outputs"]["SesIdentityName"]
    assert output["Condition"] == "WithSesIdentity"
    # The app stack takes the same name as its SesIdentity parameter (same pattern).
    merge = load_cfn(MERGE)["Parameters"]["SesIdentity"]
    assert merge["AllowedPattern"] == stateful["Parameters"]["SesIdentity"]["AllowedPattern"]


def test_dead_letter_alarm_watches_the_dead_letter_queue(stateful):
    alarm = stateful["Resources"]["RefreshDeadLetterAlarm"]["Properties"]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"][0]["Value"] == {
        "Fn::GetAtt": ["RefreshDeadLetterQueue", "QueueName"]
    }
    assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
