// Alerts on the connector's own run records (structured trace lines, docs/operations.md): a run
// that failed, halted or stalled, a run the guard held for approval, a run that rejected more than
// a share of its rows, a batch that went to the poison queue. A rule exists only with someone to
// tell: the action group this template creates for an e-mail address, or one of yours.
param location string
param tags object
param namePrefix string
param applicationInsightsId string
param alertEmail string
@description('An existing action group (resource id) the alerts go to, besides or instead of the e-mail.')
param alertActionGroupId string
param rejectedShareThreshold string

// Every record is one trace line: {"connectorEvent": "<name>", ...}. A rule looks at a window three
// times its frequency, so a record that reaches the workspace late (ingestion takes minutes) is
// still in it, and counts only records ingested since the previous look, so none alerts twice.
var frequency = 'PT5M'
var window = 'PT15M'
var records = 'traces | where ingestion_time() > ago(5m) | where message startswith \'{"connectorEvent"\' | extend e = parse_json(message)'
var hasReceiver = !empty(alertEmail) || !empty(alertActionGroupId)
var actionGroups = concat(empty(alertEmail) ? [] : [actionGroup.id], empty(alertActionGroupId) ? [] : [alertActionGroupId])

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
  for rule in (hasReceiver ? rules : []): {
    name: 'alert-${namePrefix}-${rule.name}'
    location: location
    tags: tags
    properties: {
      displayName: 'Braze connector: ${rule.name}'
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [applicationInsightsId]
      evaluationFrequency: frequency
      windowSize: window
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
        actionGroups: actionGroups
      }
    }
  }
]

output ruleCount int = hasReceiver ? length(rules) : 0
