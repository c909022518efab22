package interceptor

import (
	"context"
	"errors"
	"strings"

	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func (c *Chain) unaryValidate(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := c.validateStatus(ctx, req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// validateStatus validates m and returns a status error: InvalidArgument
// naming each field and rule (also as a BadRequest detail), or Internal if
// the rules themselves are broken.
func (c *Chain) validateStatus(ctx context.Context, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil
	}
	err := c.validator.Validate(pm)
	if err == nil {
		return nil
	}
	var ve *protovalidate.ValidationError
	if !errors.As(err, &ve) {
		c.log.ErrorContext(ctx, "validation failed to run", "error", err)
		return status.Error(codes.Internal, "internal error")
	}
	st := status.New(codes.InvalidArgument, violationText(ve))
	br := &errdetails.BadRequest{}
	for _, v := range ve.Violations {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       protovalidate.FieldPathString(v.Proto.GetField()),
			Description: v.Proto.GetMessage(),
			Reason:      v.Proto.GetRuleId(),
		})
	}
	if d, err := st.WithDetails(br); err == nil {
		st = d
	}
	return st.Err()
}

// violationText renders violations as "invalid field: message [rule]; ...".
// protovalidate's messages describe the rule, never the value, so the text
// is safe to log and to show.
func violationText(ve *protovalidate.ValidationError) string {
	var b strings.Builder
	for i, v := range ve.Violations {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString("invalid ")
		if f := protovalidate.FieldPathString(v.Proto.GetField()); f != "" {
			b.WriteString(f)
		} else {
			b.WriteString("message")
		}
		b.WriteString(": ")
		b.WriteString(v.Proto.GetMessage())
		if id := v.Proto.GetRuleId(); id != "" {
			b.WriteString(" [")
			b.WriteString(id)
			b.WriteString("]")
		}
	}
	return b.String()
}
