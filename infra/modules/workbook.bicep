// The operations view: an Azure Monitor workbook over the connector's run records — run history,
// rows and profiles per run, Braze requests and 429s, runs that wait for a person or failed,
// drift found by reconciles, data points per destination. Its queries (infra/workbook.json) are
// checked against the records the code writes (test/unit/infra.test.ts).
param name string
param location string
param tags object
param applicationInsightsId string

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: name
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Braze connector operations'
    category: 'workbook'
    sourceId: applicationInsightsId
    serializedData: loadTextContent('../workbook.json')
  }
}

output id string = workbook.id
