// Alerts on the connector's own run records (structured trace lines, docs/operations.md): a run
// that failed, halted or stalled, a run the guard held for approval, a run that rejected more than
// a share of its rows, a batch that went to the poison queue. Each mails the action group, when an
// address is given.
param location string
param tags object
param namePrefix string
param applicationInsightsId string
param alertEmail string
param rejectedShareThreshold string

// Every record is one trace line: {"connectorEvent": "<name>", ...}.
var records = 'traces | where message startswith \'{"connectorEvent"\' | extend e = parse_json(message)'

var rules = [
  {
    name: 'run-failed-halted-stalled'
    description: 'A run failed (bad input), halted (Braze refused the key) or stalled (no batch ended for RUN_STALL_MINUTES).'
    severity: 1
    query: '${records} | where tostring(e.connectorEvent) in ("RunFailed", "RunHalted", "RunStalled") | project timestamp, event = tostring(e.connectorEvent), runId = tostring(e.runId), destination = tostring(e.destination), reason = tostring(e.reason)'
  }
  {
    name: 'run-held'
    description: 'A run would clear or change more than its destination\'s guard allows: it sent nothing and waits for POST /api/runs/{id}/approve or /cancel.'
    severity: 1
    query: '${records} | where tostring(e.connectorEvent) == "RunHeld" | project timestamp, runId = tostring(e.runId), destination = tostring(e.destination), reason = tostring(e.reason)'
  }
  {
    name: 'rejected-share'
    description: 'A completed run rejected more than the configured share of the rows it read.'
    severity: 2
    query: '${records} | where tostring(e.connectorEvent) == "RunCompleted" and todouble(e.rowsRead) > 0 | extend share = todouble(e.rowsRejected) / todouble(e.rowsRead) | where share > ${rejectedShareThreshold} | project timestamp, runId = tostring(e.runId), destination = tostring(e.destination), share'
  }
  {
    name: 'batch-poisoned'
    description: 'A batch message failed every attempt and went to the poison queue; its profiles are counted failed until a resume.'
    severity: 2
    query: '${records} | where tostring(e.connectorEvent) == "BatchPoisoned" | project timestamp, runId = tostring(e.runId), batchId = tostring(e.batchId), profiles = toint(e.profiles)'
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-${namePrefix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'brazeconn'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [
  for rule in rules: {
    name: 'alert-${namePrefix}-${rule.name}'
    location: location
    tags: tags
    properties: {
      displayName: 'Braze connector: ${rule.name}'
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [applicationInsightsId]
      evaluationFrequency: 'PT5M'
      windowSize: 'PT5M'
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: 'Count'
            operator: 'GreaterThan'
            threshold: 0
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      autoMitigate: false
      actions: {
        actionGroups: empty(alertEmail) ? [] : [actionGroup.id]
      }
    }
  }
]
