-- Argo CD health of agentid.dev/AgentIdentity (resource.customizations.health.agentid.dev_AgentIdentity).
-- Lua 5.1, base library only; the object is the global `obj`.
--   Healthy      Ready=True for the current generation (Active or Supervised)
--   Suspended    supervision mode Suspended, in force
--   Degraded     Revoked, Expired, Failed, or Ready=False for the current generation
--   Progressing  no status yet, Pending, being deleted, or status older than the spec (observedGeneration)
local hs = { status = "Progressing", message = "Waiting for the agentid operator" }
local metadata = obj.metadata or {}
local status = obj.status
if metadata.deletionTimestamp ~= nil then
  hs.message = "Being deleted: the operator is removing its bindings, keys and ServiceAccount"
  return hs
end
if status == nil then
  return hs
end
local generation = metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local ready = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end
if ready ~= nil and generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.message = "Waiting for the Ready condition of generation " .. tostring(generation)
  return hs
end
local function explain(prefix)
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    return prefix .. ": " .. ready.message
  end
  return prefix
end
local phase = status.phase
if phase == "Revoked" or phase == "Expired" then
  hs.status = "Degraded"
  local text = phase
  if status.revocationReason ~= nil and status.revocationReason ~= "" then
    text = text .. ": " .. status.revocationReason
  end
  hs.message = text
  return hs
end
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = explain("Failed")
  return hs
end
if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = explain("Suspended")
  return hs
end
if phase == nil or phase == "Pending" or ready == nil then
  hs.message = explain("Pending")
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = explain(tostring(phase))
  return hs
end
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = explain(tostring(phase) .. " (" .. tostring(ready.reason) .. ")")
  return hs
end
hs.message = explain(tostring(phase))
return hs
