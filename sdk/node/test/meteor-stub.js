// SPDX-License-Identifier: MIT
// Just enough of Meteor for docs/guides/meteor.md's server code to run in the
// tests: settings, users and collections in memory ($set / $unset), Accounts
// hooks, methods, check, and WebApp.connectHandlers on a node:http server.
const settings = { presenced: {} };
const methods = {};
const loginHooks = [];
const logoutHooks = [];
const handlers = [];

class Collection {
  constructor() { this.docs = new Map(); }
  _apply(id, mod) {
    const d = this.docs.get(id) || { _id: id };
    for (const [k, v] of Object.entries(mod.$set || {})) d[k] = v;
    for (const k of Object.keys(mod.$unset || {})) delete d[k];
    this.docs.set(id, d);
  }
  async updateAsync(sel, mod) {
    const ids = typeof sel === 'string' ? [sel] : [...this.docs.keys()];
    for (const id of ids) if (this.docs.has(id)) this._apply(id, mod);
  }
  async upsertAsync(id, mod) { this._apply(id, mod); }
  async findOneAsync(id) { return this.docs.get(id); }
  find() { return { fetchAsync: async () => [...this.docs.values()] }; }
}

export const Meteor = {
  settings,
  users: new Collection(),
  methods(m) { Object.assign(methods, m); },
  Error: class extends Error {},
  // test side
  _call(name, connection, ...args) { return methods[name].apply({ connection, userId: null }, args); },
};
export const Mongo = { Collection };
export const Accounts = {
  onLogin(fn) { loginHooks.push(fn); },
  onLogout(fn) { logoutHooks.push(fn); },
  _login(info) { for (const f of loginHooks) f(info); },
  _logout(info) { for (const f of logoutHooks) f(info); },
};
export const check = (v, pattern) => { if (!pattern(v)) throw new Error('Match failed'); };
export const Match = { OneOf: (...xs) => (v) => xs.includes(v) };
export const WebApp = {
  connectHandlers: { use(path, fn) { handlers.push([path, fn]); } },
  // a node:http request listener serving what was mounted
  _listener: (req, res) => {
    const h = handlers.find(([p]) => req.url === p || req.url.startsWith(p + '/'));
    if (!h) { res.statusCode = 404; res.end(); return; }
    h[1](req, res, (err) => { res.statusCode = err ? 500 : 404; res.end(); });
  },
};
