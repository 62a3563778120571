// The lab's IAM policy evaluator: a separate process that the lab (package
// lab/iameval) starts and talks to over stdin/stdout, one JSON object per
// line. It is a test instrument of the lab, never part of latentworker.
//
// Request:  {"id": 1, "principal": "arn:aws:iam::123456789012:user/u",
//            "policies": [{"name": "p", "document": {...}}],
//            "checks": [{"action": "ec2:RunInstances", "resource": "arn:...",
//                        "account": "123456789012", "context": {"k": "v" | ["v", ...]},
//                        "resourcePolicy": {...} (optional: a KMS key's key policy)}]}
// Answer:   {"id": 1, "results": [{"decision": "Allowed" | "ImplicitlyDenied" |
//            "ExplicitlyDenied" | "Error", "error": "...", "ignored": ["key", ...]}]}
//
// Answers may come in any order; the id pairs them with requests. Identity
// policies only: no SCPs, RCPs, boundaries or resource policies.
import readline from 'node:readline'
import { runSimulation } from '@cloud-copilot/iam-simulate'

async function check(principal, policies, c) {
  const sim = {
    identityPolicies: policies.map((p) => ({ name: p.name, policy: p.document })),
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy: c.resourcePolicy,
    request: {
      principal,
      action: c.action,
      resource: { resource: c.resource, accountId: c.account },
      contextVariables: c.context || {}
    }
  }
  const res = await runSimulation(sim, {})
  if (res.resultType === 'error') {
    return { decision: 'Error', error: res.errors.message + ': ' + JSON.stringify(res.errors) }
  }
  let ignored = []
  if (res.resultType === 'single') {
    ignored = res.result.ignoredContextKeys || []
  } else {
    for (const r of res.results) ignored.push(...(r.ignoredContextKeys || []))
  }
  return { decision: res.overallResult, ignored }
}

async function handle(line) {
  let req
  try {
    req = JSON.parse(line)
  } catch (e) {
    return { id: -1, error: 'unreadable request: ' + e.message }
  }
  const results = []
  for (const c of req.checks || []) {
    try {
      results.push(await check(req.principal, req.policies || [], c))
    } catch (e) {
      results.push({ decision: 'Error', error: String(e && e.stack ? e.stack : e) })
    }
  }
  return { id: req.id, results }
}

const rl = readline.createInterface({ input: process.stdin, terminal: false })
rl.on('line', (line) => {
  if (line.trim() === '') return
  handle(line).then((ans) => process.stdout.write(JSON.stringify(ans) + '\n'))
})
rl.on('close', () => process.exit(0))
