// One-time grant that lets stats' IAM database user create its tables (a new IAM user in Cloud
// SQL may log in but owns nothing). scripts/deploy.sh runs it after Terraform has created the
// instance, the database and the IAM user, before stats starts:
//   node services/stats/scripts/grant-database.mjs <instance connection name> <database> <iam user>
// It sets a random password on the built-in `postgres` user (the deployer needs
// roles/cloudsql.admin), connects through the Cloud SQL connector, grants, then sets another
// random password that nobody keeps: no password outlives this script.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { Connector } from "@google-cloud/cloud-sql-connector";
import pg from "pg";

const [instance, database, iamUser] = process.argv.slice(2);
if (!instance || !database || !iamUser) {
  console.error("usage: grant-database.mjs <project:region:instance> <database> <iam user>");
  process.exit(2);
}
const [project, , name] = instance.split(":");

function setPostgresPassword(password) {
  execFileSync(
    "gcloud",
    [
      "sql",
      "users",
      "set-password",
      "postgres",
      `--instance=${name}`,
      `--project=${project}`,
      `--password=${password}`,
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
}

const quoted = `"${iamUser.replaceAll('"', '""')}"`;
const password = randomBytes(24).toString("base64url");
setPostgresPassword(password);
const connector = new Connector();
try {
  const client = new pg.Client({
    ...(await connector.getOptions({ instanceConnectionName: instance })),
    user: "postgres",
    password,
    database,
  });
  await client.connect();
  try {
    // CREATE on the database: the migrator keeps its journal in a schema of its own.
    await client.query(
      `grant create, connect on database "${database.replaceAll('"', '""')}" to ${quoted}`,
    );
    await client.query(`grant create, usage on schema public to ${quoted}`);
  } finally {
    await client.end();
  }
  console.log(`granted ${iamUser} what stats needs on ${instance}/${database}`);
} finally {
  connector.close();
  setPostgresPassword(randomBytes(24).toString("base64url"));
}
