#!/usr/bin/env bash
# LocalStack "ready" hook (runs inside the container, where `awslocal` is on PATH): the
# resources infra/cfn/stateful.yaml makes for one stage, under the same names, and the
# stage's SecureString parameters. Idempotent; LocalStack community keeps no state across
# restarts, so this runs on every start.
set -euo pipefail

stage=${LM_STAGE:-dev}
region=${AWS_DEFAULT_REGION:-eu-west-1}
queue=lifemonitor-refresh-$stage
dlq=$queue-dlq
bucket=${LM_CRATE_BUCKET:-lifemonitor-$stage-crates}
prefix=/lifemonitor/$stage
# The service runs on the host, so the database is the compose postgres as seen from there.
database_url=${LM_LOCAL_DATABASE_URL:-postgresql://lifemonitor:lifemonitor@localhost:5432/lifemonitor}

# Refresh queue + dead-letter queue (redrive after 5 receives; visibility 6 x 120 s).
dlq_url=$(awslocal sqs create-queue --queue-name "$dlq" \
    --attributes MessageRetentionPeriod=1209600 --query QueueUrl --output text)
dlq_arn=$(awslocal sqs get-queue-attributes --queue-url "$dlq_url" \
    --attribute-names QueueArn --query Attributes.QueueArn --output text)
redrive=$(printf '{\\"deadLetterTargetArn\\":\\"%s\\",\\"maxReceiveCount\\":\\"5\\"}' "$dlq_arn")
attributes=$(printf '{"VisibilityTimeout":"720","MessageRetentionPeriod":"86400","RedrivePolicy":"%s"}' \
    "$redrive")
queue_url=$(awslocal sqs create-queue --queue-name "$queue" --attributes "$attributes" \
    --query QueueUrl --output text)

# Crate bucket: private and encrypted, as in AWS.
if ! awslocal s3api head-bucket --bucket "$bucket" >/dev/null 2>&1; then
    if [[ $region == us-east-1 ]]; then
        awslocal s3api create-bucket --bucket "$bucket" >/dev/null
    else
        awslocal s3api create-bucket --bucket "$bucket" \
            --create-bucket-configuration "LocationConstraint=$region" >/dev/null
    fi
fi
awslocal s3api put-public-access-block --bucket "$bucket" --public-access-block-configuration \
    BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
awslocal s3api put-bucket-encryption --bucket "$bucket" --server-side-encryption-configuration \
    '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}]}'

# SecureString parameters under the stage prefix (the service reads them all with one
# recursive GetParametersByPath). Registry and OAuth secrets are written later by the
# admin commands (python -m chalicelib.admin registry add ...).
awslocal ssm put-parameter --name "$prefix/database/url" --type SecureString \
    --value "$database_url" --overwrite >/dev/null

echo "lifemonitor ($stage): queue $queue_url (dead letters: $dlq), bucket $bucket," \
    "parameters under $prefix/"
