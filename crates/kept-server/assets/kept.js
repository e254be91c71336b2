/*! kept.js: the first-party snippet of Kept. A consent banner whose choices and texts come from
 * the site's manifest and the visitor's regime, Google Consent Mode, scripts held back until
 * their purpose is consented to, and kept.track / identify / page sent to this site's own Kept.
 *
 * <script src="/kept.js" data-write-key="kept_…" data-collection-point="web_shop"></script>
 * <script type="text/plain" data-kept-purpose="analytics" src="…"></script>
 *
 * Only what the visitor said travels as consent (context.consent.categoryPreferences holds
 * their explicit choices, nothing assumed), and a choice is sent once as a `Consent Updated`
 * event, which Kept writes to its consent ledger. No build step: plain modern JavaScript.
 *
 * The write key here is a `public` key: it records this browser's own choices and anonymous
 * profile. To speak for a signed-in customer, the shop's backend mints an identity token,
 * hex(HMAC-SHA256(identity_secret, userId)), and the page passes it along:
 *   kept.identify('u123', { name: 'Ada' }, { userHash: '<token from your backend>' });
 * It travels as context.kept.userHash on every call until kept.reset(). Never put the
 * identity secret itself in a page. */
(() => {
  'use strict';
  const w = window, d = document, nav = navigator;
  if (w.kept && w.kept.loaded) return;
  const VERSION = '1.0.0';
  const me = d.currentScript || d.querySelector('script[data-write-key]');
  const opts = (me && me.dataset) || {};
  const base = (opts.host || (me && me.src ? new URL(me.src, location.href).origin : location.origin)).replace(/\/$/, '');
  const writeKey = opts.writeKey || '';
  const waiting = Array.isArray(w.kept) ? w.kept.slice() : [];
  const gpc = nav.globalPrivacyControl === true;
  const DENIED = 'denied', GRANTED = 'granted';

  // --- first-party storage ---------------------------------------------------------------
  const readCookie = name => {
    const m = d.cookie.match(new RegExp('(?:^|;\\s*)' + name + '=([^;]*)'));
    try { return m ? decodeURIComponent(m[1]) : null; } catch (e) { return null; }
  };
  const writeCookie = (name, value) => {
    d.cookie = name + '=' + encodeURIComponent(value) + '; Path=/; Max-Age=31536000; SameSite=Lax' +
      (location.protocol === 'https:' ? '; Secure' : '');
  };
  const uuid = () => {
    if (w.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    const h = Array.from(b, x => x.toString(16).padStart(2, '0')).join('');
    return [h.slice(0, 8), h.slice(8, 12), h.slice(12, 16), h.slice(16, 20), h.slice(20)].join('-');
  };

  // What the visitor said: { t: time, p: { purpose: true|false }, g: Consent Mode signals }.
  let choice = null;
  try { choice = JSON.parse(readCookie('kept_consent')); } catch (e) { /* none yet */ }
  if (!choice || typeof choice.p !== 'object' || !choice.p) choice = null;
  let aid = readCookie('kept_aid') || uuid();
  let uid = null, uhash = null;
  try {
    uid = localStorage.getItem('kept_uid');
    uhash = uid && localStorage.getItem('kept_uhash');
  } catch (e) { /* storage blocked */ }
  let cfg = null;
  const pending = [];

  // --- Google Consent Mode v2: everything denied until the visitor says otherwise --------
  w.dataLayer = w.dataLayer || [];
  if (typeof w.gtag !== 'function') w.gtag = function () { w.dataLayer.push(arguments); };
  w.gtag('consent', 'default', {
    ad_storage: DENIED, ad_user_data: DENIED, ad_personalization: DENIED, analytics_storage: DENIED,
    functionality_storage: DENIED, personalization_storage: DENIED, security_storage: GRANTED,
    wait_for_update: 500,
  });
  if (choice && choice.g) w.gtag('consent', 'update', choice.g);

  // --- what is allowed ---------------------------------------------------------------------
  const said = key => (choice ? choice.p[key] : undefined);
  // Opt-in: only a yes. Opt-out: until a no (or GPC, where it counts as one). None: always.
  const granted = p => p.requires === 'none' ||
    (p.requires === 'opt_in' ? said(p.key) === true : said(p.key) !== false && !(gpc && p.gpc));
  const grants = () => {
    const out = {};
    for (const p of cfg.purposes) out[p.key] = granted(p);
    return out;
  };
  const signals = () => {
    const on = cls => (cfg.purposes.some(p => p.class === cls && granted(p)) ? GRANTED : DENIED);
    const ads = on('advertising'), own = on('personalize');
    return {
      ad_storage: ads, ad_user_data: ads, ad_personalization: ads, analytics_storage: on('analytics'),
      functionality_storage: own, personalization_storage: own, security_storage: GRANTED,
    };
  };
  // A `data-kept-purpose` names consent categories, purpose keys or purpose branches
  // (`marketing` covers `marketing.communications`); all must be granted, and one that names
  // nothing known is never granted.
  const covered = spec => {
    const keys = new Set();
    for (const t of String(spec).split(/[\s,]+/).filter(Boolean)) {
      for (const k of cfg.categories[t] || []) keys.add(k);
      for (const p of cfg.purposes) if (p.key === t || p.key.startsWith(t + '.')) keys.add(p.key);
    }
    return [...keys];
  };
  const allowed = spec => {
    const keys = covered(spec), g = grants();
    return keys.length > 0 && keys.every(k => g[k] === true);
  };
  const activate = () => {
    for (const held of d.querySelectorAll('script[type="text/plain"][data-kept-purpose]')) {
      if (!allowed(held.dataset.keptPurpose)) continue;
      const s = d.createElement('script');
      for (const a of held.attributes) if (a.name !== 'type') s.setAttribute(a.name, a.value);
      if (held.dataset.keptType) s.type = held.dataset.keptType;
      s.text = held.text;
      held.replaceWith(s);
    }
  };

  // --- sending -----------------------------------------------------------------------------
  const pageProps = () => ({
    path: location.pathname, referrer: d.referrer, search: location.search, title: d.title, url: location.href,
  });
  const post = (path, body) => {
    const now = new Date().toISOString();
    const consent = { categoryPreferences: Object.assign({}, choice ? choice.p : {}) };
    if (gpc) consent.gpc = true;
    const extra = {};
    // Where Kept located the visitor for the banner, so that the profile's regime is the same.
    if (cfg.country) extra.location = { country: cfg.country, region: cfg.region };
    if (opts.collectionPoint) extra.kept = { collection_point: opts.collectionPoint };
    // The identity token the shop's backend minted for this user (see the top of this file).
    if (uhash) extra.kept = Object.assign(extra.kept || {}, { userHash: uhash });
    // The notice shown with each choice goes with every event, so the ledger names it whichever
    // event arrives first.
    if (choice && choice.n) extra.kept = Object.assign(extra.kept || {}, { notices: choice.n });
    Object.assign(body, {
      messageId: uuid(), anonymousId: aid, timestamp: now, sentAt: now, writeKey,
      context: Object.assign({
        library: { name: 'kept.js', version: VERSION }, locale: nav.language, userAgent: nav.userAgent,
        page: pageProps(), consent,
      }, extra, body.context || {}),
    });
    if (uid && !body.userId) body.userId = uid;
    // `text/plain` keeps the request simple: no preflight, even from another origin.
    return fetch(base + '/v1/' + path, {
      method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'text/plain' },
      keepalive: true, credentials: 'omit',
    }).then(r => r.ok, () => false);
  };
  // Until the configuration is in, calls wait (the consent they carry is not known yet).
  const call = (path, body) => (cfg ? post(path, body) : new Promise(done => pending.push(() => post(path, body).then(done))));
  // The anonymous id is stored only once storing it is allowed: in opt-in regimes, once the
  // visitor has made a choice (it then identifies the record of that choice).
  const remember = () => { if (choice || (cfg && cfg.mode !== 'opt_in')) writeCookie('kept_aid', aid); };

  const decide = (p, source) => {
    // The notice shown with each purpose, as named by the server's one rule: the ledger records
    // the choice under it (and under none where none was shown).
    const notices = {};
    for (const x of cfg.purposes) if (x.key in p && x.notice) notices[x.key] = { id: x.notice.id, version: x.notice.version };
    choice = { t: Date.now(), p, n: notices };
    choice.g = signals();
    writeCookie('kept_consent', JSON.stringify(choice));
    remember();
    w.gtag('consent', 'update', choice.g);
    activate();
    post('t', {
      type: 'track', event: 'Consent Updated',
      properties: { purposes: Object.assign({}, p), source, regime: cfg.regime, notices, gpc },
    });
    close();
    links();
    w.dispatchEvent(new CustomEvent('kept:consent', { detail: grants() }));
  };
  const asked = () => cfg.purposes.filter(p => p.requires !== 'none');
  const sellable = () => cfg.purposes.filter(p => p.class === 'advertising' && p.requires !== 'none');

  // --- the banner ----------------------------------------------------------------------------
  const el = (tag, attrs, text) => {
    const e = d.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  };
  const style = () => {
    if (d.getElementById('kept-style')) return;
    const c = /^#[0-9a-f]{6}$/i.test(cfg.brand_colour || '') ? cfg.brand_colour : '#2f4f6f';
    const s = el('style', { id: 'kept-style' });
    s.textContent =
      `.kept-b{position:fixed;z-index:2147483000;left:1rem;right:1rem;bottom:1rem;max-width:40rem;margin:auto;max-height:85vh;overflow:auto;background:#fff;color:#1b1b1b;border:1px solid #bbb;border-radius:.5rem;box-shadow:0 4px 24px #0003;padding:1rem 1.25rem;font:15px/1.45 system-ui,sans-serif}` +
      `.kept-b h2{font-size:1.15rem;margin:0 0 .5rem}.kept-b p{margin:0 0 .75rem}.kept-b label{display:block;margin:.6rem 0 .2rem}.kept-b small{display:block;color:#4a4a4a}.kept-b details{margin:0 0 .4rem 1.6rem}` +
      `.kept-r{display:flex;flex-wrap:wrap;gap:.5rem;justify-content:flex-end;margin-top:.75rem}.kept-b button,.kept-l button{font:inherit;cursor:pointer;border-radius:.35rem}` +
      `.kept-b button{padding:.5rem 1rem;border:2px solid ${c};background:#fff;color:${c}}.kept-b button.kept-p{background:${c};color:#fff}` +
      `.kept-l{position:fixed;z-index:2147483000;left:.75rem;bottom:.75rem;display:flex;gap:.5rem;font:13px system-ui,sans-serif}.kept-l button{background:#fff;color:${c};border:1px solid #bbb;padding:.3rem .6rem}` +
      `.kept-b :focus-visible,.kept-l :focus-visible{outline:3px solid #1a73e8;outline-offset:2px}`;
    d.head.append(s);
  };
  let box = null;
  const close = () => { if (box) box.remove(); box = null; };
  const banner = () => {
    close();
    style();
    const t = cfg.texts;
    box = el('div', {
      id: 'kept-banner', class: 'kept-b', role: 'dialog', 'aria-modal': 'false',
      'aria-labelledby': 'kept-title', 'aria-describedby': 'kept-intro', tabindex: '-1', lang: cfg.locale,
    });
    box.append(el('h2', { id: 'kept-title' }, t.title), el('p', { id: 'kept-intro' }, t.intro));
    if (gpc && sellable().some(p => p.gpc)) box.append(el('p', {}, t.gpc));
    const list = el('div', { id: 'kept-choices', hidden: '' });
    for (const p of asked()) {
      const label = el('label');
      const tick = el('input', { type: 'checkbox', 'data-purpose': p.key });
      tick.checked = granted(p);
      label.append(tick, ' ', el('strong', {}, p.name), el('small', {}, p.description));
      list.append(label);
      if (p.notice) {
        const more = el('details');
        more.append(el('summary', {}, p.notice.title), el('small', {}, p.notice.text));
        list.append(more);
      }
    }
    list.append(el('small', {}, t.essential));
    const row = el('div', { class: 'kept-r' });
    const button = (text, cls, name, act) => {
      const b = el('button', { type: 'button', class: cls, 'data-kept': name }, text);
      b.addEventListener('click', act);
      row.append(b);
      return b;
    };
    button(t.reject, 'kept-p', 'reject', () => {
      const p = Object.assign({}, choice && choice.p);
      for (const x of asked()) p[x.key] = false;
      decide(p, 'banner');
    });
    const choose = button(t.choose, '', 'choose', () => {
      if (list.hidden) {
        list.hidden = false;
        choose.textContent = t.save;
        const first = list.querySelector('input');
        if (first) first.focus();
        return;
      }
      const p = Object.assign({}, choice && choice.p);
      for (const tick of list.querySelectorAll('input[data-purpose]')) {
        const x = cfg.purposes.find(q => q.key === tick.dataset.purpose);
        // An opt-out purpose left as it was is not a choice; anything else the visitor set is.
        if (x.requires === 'opt_in' || tick.checked !== granted(x) || x.key in p) p[x.key] = tick.checked;
      }
      decide(p, 'banner');
    });
    button(t.accept, 'kept-p', 'accept', () => {
      const p = Object.assign({}, choice && choice.p);
      // GPC says no to sale and sharing; "accept all" does not override it.
      for (const x of asked()) if (x.requires === 'opt_in' && !(gpc && x.gpc)) p[x.key] = true;
      decide(p, 'banner');
    });
    box.append(list, row);
    d.body.append(box);
    box.focus({ preventScroll: true });
  };

  // The "do not sell or share" link where sale or sharing is an opt-out, and a way back to the
  // choices once made (withdrawing is as easy as giving). A page may place them in an element
  // marked `data-kept-links`; otherwise they sit in a corner.
  const links = () => {
    const old = d.getElementById('kept-links');
    if (old) old.remove();
    const t = cfg.texts;
    const bar = el('div', { id: 'kept-links', class: 'kept-l', lang: cfg.locale });
    const optOut = sellable().filter(p => p.requires === 'opt_out');
    if (optOut.length) {
      const out = optOut.every(p => !granted(p));
      const b = el('button', { type: 'button', 'data-kept': 'do-not-sell', 'aria-pressed': String(out) },
        out ? (gpc && optOut.every(p => p.gpc) && !(choice && optOut.some(p => p.key in choice.p)) ? t.gpc : t.opted_out) : t.do_not_sell);
      b.addEventListener('click', () => {
        if (out) return;
        const p = Object.assign({}, choice && choice.p);
        for (const x of sellable()) p[x.key] = false;
        decide(p, 'do_not_sell');
      });
      bar.append(b);
    }
    if (choice && asked().some(p => p.requires === 'opt_in')) {
      const b = el('button', { type: 'button', 'data-kept': 'manage' }, t.manage);
      b.addEventListener('click', banner);
      bar.append(b);
    }
    if (!bar.children.length) return;
    style();
    const host = d.querySelector('[data-kept-links]');
    if (host) {
      bar.className = '';
      host.append(bar);
    } else {
      d.body.append(bar);
    }
  };

  const ready = f => (d.readyState === 'loading' ? d.addEventListener('DOMContentLoaded', f, { once: true }) : f());
  const start = c => {
    cfg = c;
    cfg.categories = cfg.categories || {};
    remember();
    w.gtag('consent', 'update', signals());
    // A choice that says nothing about a purpose asked about now is asked again.
    const stale = cfg.purposes.some(p => p.requires === 'opt_in' && !(gpc && p.gpc) && !(choice && p.key in choice.p));
    ready(() => {
      activate();
      links();
      if (stale) banner();
    });
    pending.splice(0).forEach(f => f());
  };

  const api = {
    loaded: true,
    track: (event, properties, context) => call('t', { type: 'track', event: String(event), properties: properties || {}, context }),
    page: (name, properties, context) => {
      const body = { type: 'page', properties: Object.assign(pageProps(), properties), context };
      if (name) body.name = String(name);
      return call('p', body);
    },
    // identify(userId, traits, { userHash, ...context }): `userHash` is the identity token.
    identify: (userId, traits, context) => {
      if (userId && typeof userId === 'object') { context = traits; traits = userId; userId = null; }
      let hash = null;
      if (context && context.userHash) {
        hash = String(context.userHash);
        context = Object.assign({}, context);
        delete context.userHash;
      }
      if (userId != null) {
        // A token belongs to one user id: another user without a new token has none.
        if (hash) uhash = hash; else if (String(userId) !== uid) uhash = null;
        uid = String(userId);
        try {
          localStorage.setItem('kept_uid', uid);
          if (uhash) localStorage.setItem('kept_uhash', uhash); else localStorage.removeItem('kept_uhash');
        } catch (e) { /* storage blocked */ }
      }
      const body = { type: 'identify', traits: traits || {}, context };
      if (uid) body.userId = uid;
      return call('i', body);
    },
    // Forgets the user (log out): a new anonymous id, no user id.
    reset: () => {
      uid = null;
      uhash = null;
      aid = uuid();
      try { localStorage.removeItem('kept_uid'); localStorage.removeItem('kept_uhash'); } catch (e) { /* storage blocked */ }
      if (cfg) remember();
    },
    consent: () => (cfg ? grants() : {}),
    anonymousId: () => aid,
    open: () => { if (cfg) ready(banner); },
    activate: () => { if (cfg) activate(); },
  };
  w.kept = api;
  for (const [method, ...args] of waiting) if (typeof api[method] === 'function') api[method](...args);

  fetch(base + '/kept/config.json', { credentials: 'omit' })
    .then(r => (r.ok ? r.json() : Promise.reject(new Error('status ' + r.status))))
    // Without a configuration nothing consent-based runs and nothing is sent: fail closed.
    .then(start, e => console.warn('kept.js: no configuration', e));
})();
