# The failing role for tests: one resource that always fails (failed_resources > 0).
class role::fail {
  include role
  exec { 'always-fails':
    command => '/bin/false',
  }
}
