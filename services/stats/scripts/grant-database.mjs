// One-time grant that lets stats' IAM database user create its tables (a new IAM user in Cloud
// SQL may log in but owns nothing). scripts/deploy.sh runs it after Terraform has created the
// instance, the database and the IAM user, before stats starts:
//   node services/stats/scripts/grant-database.mjs <instance connection name> <database> <iam user>
// It sets a random password on the built-in `postgres` user through the Cloud SQL Admin API (in
// an HTTPS body: never on a command line or in gcloud's logs; the deployer needs
// roles/cloudsql.admin), connects through the Cloud SQL connector, grants, then sets another
// random password that nobody keeps.
import { randomBytes } from "node:crypto";
import { Connector } from "@google-cloud/cloud-sql-connector";
import { GoogleAuth } from "google-auth-library";
import pg from "pg";

const [instance, database, iamUser] = process.argv.slice(2);
if (!instance || !database || !iamUser) {
  console.error("usage: grant-database.mjs <project:region:instance> <database> <iam user>");
  process.exit(2);
}
const [project, , name] = instance.split(":");
const auth = new GoogleAuth({ scopes: ["https://www.googleapis.com/auth/sqlservice.admin"] });
const api = `https://sqladmin.googleapis.com/v1/projects/${project}`;

/** Sets the postgres user's password and waits for the operation to finish. */
async function setPostgresPassword(password) {
  const client = await auth.getClient();
  const { data: operation } = await client.request({
    url: `${api}/instances/${name}/users?name=postgres`,
    method: "PUT",
    data: { name: "postgres", password },
  });
  for (let waited = 0; waited < 120; waited += 2) {
    const { data } = await client.request({ url: `${api}/operations/${operation.name}` });
    if (data.status === "DONE") {
      if (data.error)
        throw new Error(`setting the postgres password failed: ${JSON.stringify(data.error)}`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
  throw new Error("setting the postgres password did not finish within 2 minutes");
}

const quote = (identifier) => `"${identifier.replaceAll('"', '""')}"`;
const password = randomBytes(24).toString("base64url");
await setPostgresPassword(password);
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
    await client.query(`grant create, connect on database ${quote(database)} to ${quote(iamUser)}`);
    await client.query(`grant create, usage on schema public to ${quote(iamUser)}`);
  } finally {
    await client.end();
  }
  console.log(`granted ${iamUser} what stats needs on ${instance}/${database}`);
} finally {
  connector.close();
  await setPostgresPassword(randomBytes(24).toString("base64url"));
}
