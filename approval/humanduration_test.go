package approval

import (
	"testing"
	"time"
)

func TestHumanDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0 seconds"},
		{time.Second, "1 second"},
		{45 * time.Second, "45 seconds"},
		{1500 * time.Millisecond, "2 seconds"},
		{time.Minute, "1 minute"},
		{90 * time.Second, "2 minutes"},
		{89 * time.Second, "1 minute"},
		{15 * time.Minute, "15 minutes"},
		{15*time.Minute + 29*time.Second, "15 minutes"},
		{30 * time.Minute, "30 minutes"},
		{59 * time.Minute, "59 minutes"},
		{time.Hour, "1 hour"},
		{90 * time.Minute, "90 minutes"},
		{2 * time.Hour, "2 hours"},
		{8 * time.Hour, "8 hours"},
		{24 * time.Hour, "24 hours"},
	}
	for _, tt := range tests {
		t.Run(tt.in.String(), func(t *testing.T) {
			if got := HumanDuration(tt.in); got != tt.want {
				t.Errorf("HumanDuration(%v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
