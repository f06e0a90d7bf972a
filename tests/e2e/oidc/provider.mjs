// The OpenID Provider of the e2e tier: npm oidc-provider (a certified implementation) with a
// small configuration of ours. Started by tests/e2e/oidc/chain.py as
//
//   node provider.mjs CONFIG.json
//
// CONFIG.json (written by the test, never committed) holds the issuer, the port, the one
// client, the users and the signing keys; restarting with other keys is how the tests rotate
// them. Module resolution: NODE_PATH does not apply to ES modules, so the package is loaded
// from the install folder named by OIDC_PROVIDER_HOME (scripts/lib.sh installs it there).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const home = process.env.OIDC_PROVIDER_HOME;
const entry = join(home, 'node_modules', 'oidc-provider', 'lib', 'index.js');
const { default: Provider } = await import(pathToFileURL(entry).href);

// The logout confirmation page, without the default one's web font (no internet here).
async function logoutSource(ctx, form) {
  ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign out</title></head>
<body><h1>Sign out of the test provider?</h1>${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button></body></html>`;
}

// Short-lived access tokens and refresh tokens (config.ttl, config.refreshTokens): for the
// session tests. Refresh tokens here are issued without offline_access, so they die with
// the provider's session (a sign-out ends them), and each use rotates them: a used one
// presented again is "already used", and the provider then revokes the whole grant.
const tokens = config.refreshTokens
  ? {
      issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
      rotateRefreshToken: true,
    }
  : {};

const provider = new Provider(config.issuer, {
  clients: [config.client],
  jwks: config.jwks,
  cookies: { keys: config.cookieKeys },
  ...(config.ttl ? { ttl: config.ttl } : {}),
  ...tokens,
  // A custom claim is only released for a scope that declares it.
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Put the scope's claims into the ID token too (as Keycloak, Entra ID and Google do), so a
  // JWT-verifying edge finds the email in it; relying parties still get them from userinfo.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true }, // a login form accepting any password
    rpInitiatedLogout: { enabled: true, logoutSource },
  },
  async findAccount(ctx, id) {
    const user = config.users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: id, email_verified: true, name: user.name, groups: user.groups };
      },
    };
  },
});

// Why a request failed, in the provider's log (its error pages hide the cause).
for (const event of ['end_session.error', 'authorization.error', 'grant.error', 'server_error']) {
  provider.on(event, (ctx, error) => console.error(event, error.message, error.cause ?? ''));
}
// Each token issued, by grant type: the session tests count the refreshes.
provider.on('grant.success', (ctx) => console.log('grant.success', ctx.oidc.params.grant_type));

createServer(provider.callback()).listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${config.issuer}`);
});
