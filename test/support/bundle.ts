// The one command that makes a service's production bundle. Each image's build stage RUNs it
// with /app as the output (test/images.test.ts compares the Dockerfile's RUN to this), and the
// bundle test runs it with a temporary folder in place of /app.

/** The command, as words: `scripts/bundle-service.sh <service> <output directory>`. */
export function bundleCommand(service: string, output: string): string[] {
  return ["scripts/bundle-service.sh", service, output];
}

/** Where the images make and run the bundle. */
export const imageAppDir = "/app";
